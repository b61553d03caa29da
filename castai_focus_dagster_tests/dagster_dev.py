"""`dagster dev` (webserver + daemon) on loopback, driven through the GraphQL API the web console uses.

Shared by test_web_console.py and scripts/screenshots.py, so the committed screenshots come from the
same kind of run that the test checks: the repo's workspace.yaml and dagster.yaml, a throwaway
DAGSTER_HOME, and the Cast AI API given by the caller's environment.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from dagster_graphql import DagsterGraphQLClient

REPO = Path(__file__).resolve().parents[1]
DAGSTER = REPO / ".venv" / "bin" / "dagster"
# The default (workload) allocation mode's graph: castai_cluster_costs exists only in split mode.
ASSET_KEYS = (
    "castai_clusters",
    "castai_workload_costs",
    "castai_listing_prices",
    "castai_enrichment_context",
    "focus_cost_and_usage",
)
FINISHED_BACKFILL_STATUSES = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

WORKSPACE_QUERY = """
{
  workspaceOrError {
    __typename
    ... on PythonError { message }
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
          ... on RepositoryLocation {
            repositories { name jobs { name } assetNodes { assetKey { path } } }
          }
        }
      }
    }
  }
}
"""

LAUNCH_BACKFILL_MUTATION = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

BACKFILL_QUERY = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PythonError { message }
    ... on PartitionBackfill {
      status
      partitionNames
      error { message }
      runs { runId status tags { key value } }
    }
  }
}
"""

MATERIALIZATIONS_QUERY = """
query Materializations($path: [String!]!, $partitions: [String!]) {
  assetOrError(assetKey: {path: $path}) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: $partitions) {
        partition
        runId
        metadataEntries {
          __typename
          label
          ... on IntMetadataEntry { intRepr }
          ... on FloatMetadataEntry { floatValue }
          ... on TextMetadataEntry { text }
        }
      }
    }
  }
}
"""


class DagsterDevError(RuntimeError):
    """`dagster dev` did not start, or a GraphQL call answered with an error; carries the log lines."""


def free_port() -> int:
    """A port that is free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class DagsterDev:
    """A running `dagster dev`: its port, process and log, and a GraphQL client pointed at it."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    client: DagsterGraphQLClient

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self._log_lines()[-lines:])

    def failures(self) -> str:
        """The log lines that say why a run failed (step and run failures, errors), for assertion messages."""
        markers = (" - STEP_FAILURE - ", " - RUN_FAILURE - ", "ERROR")
        return "\n".join(line for line in self._log_lines() if any(m in line for m in markers))

    def _log_lines(self) -> list[str]:
        if not self.log_path.exists():
            return []
        return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()

    def query(self, document: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run one GraphQL document the way the web console does (POST /graphql)."""
        result: dict[str, Any] = self.client._execute(document, dict(variables) if variables else None)
        return result


@contextmanager
def dagster_dev(home: Path, env: Mapping[str, str], startup_timeout: float = 120.0) -> Iterator[DagsterDev]:
    """Start `dagster dev -w workspace.yaml` on a free loopback port with DAGSTER_HOME=`home`.

    The repo's dagster.yaml is copied into `home`, as `make dev` does. The process gets its own process
    group so that stopping it also stops the code server, daemon and any run it launched.
    """
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    log_path = home / "dagster-dev.log"
    command = [str(DAGSTER), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env={**env, "DAGSTER_HOME": str(home)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    dev = DagsterDev(port, process, log_path, DagsterGraphQLClient("127.0.0.1", port_number=port))
    try:
        _wait_for_webserver(dev, startup_timeout)
        yield dev
    finally:
        _stop(process)


def _wait_for_webserver(dev: DagsterDev, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dev.process.poll() is not None:
            raise DagsterDevError(
                f"dagster dev exited with code {dev.process.returncode} before serving {dev.url}:\n"
                + dev.log_tail()
            )
        try:
            if httpx.get(f"{dev.url}/server_info", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise DagsterDevError(
        f"dagster dev did not serve {dev.url}/server_info within {timeout:.0f} s:\n" + dev.log_tail()
    )


def _stop(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """Ctrl-C for `dagster dev` (it shuts its webserver and daemon down), then kill what is left."""
    group = process.pid
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    deadline = time.monotonic() + 5.0
    while _group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(group):
        os.killpg(group, signal.SIGKILL)
    process.wait(timeout=10.0)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


# GraphQL calls --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeLocation:
    name: str
    load_status: str
    jobs: frozenset[str]
    assets: frozenset[str]


def code_locations(dev: DagsterDev) -> list[CodeLocation]:
    """Every code location of the workspace with what it loaded; a load error raises with its message."""
    workspace = dev.query(WORKSPACE_QUERY)["workspaceOrError"]
    if workspace["__typename"] != "Workspace":
        raise DagsterDevError(f"workspaceOrError: {workspace.get('message')}")
    locations = []
    for entry in workspace["locationEntries"]:
        loaded = entry["locationOrLoadError"] or {}
        if loaded.get("__typename") == "PythonError":
            raise DagsterDevError(f"code location {entry['name']} failed to load: {loaded['message']}")
        repositories = loaded.get("repositories", [])
        locations.append(
            CodeLocation(
                name=entry["name"],
                load_status=entry["loadStatus"],
                jobs=frozenset(job["name"] for repo in repositories for job in repo["jobs"]),
                assets=frozenset(
                    "/".join(node["assetKey"]["path"]) for repo in repositories for node in repo["assetNodes"]
                ),
            )
        )
    return locations


def wait_for_code_location(dev: DagsterDev, timeout: float = 60.0) -> CodeLocation:
    """The single code location once it has LOADED (the webserver may answer before it finishes)."""
    deadline = time.monotonic() + timeout
    while True:
        locations = code_locations(dev)
        if len(locations) == 1 and locations[0].load_status == "LOADED":
            return locations[0]
        if time.monotonic() > deadline:
            raise DagsterDevError(f"code location not loaded within {timeout:.0f} s: {locations}")
        time.sleep(1.0)


def launch_asset_backfill(
    dev: DagsterDev, partition_names: Sequence[str], asset_keys: Sequence[str] = ASSET_KEYS
) -> str:
    """Launch a backfill of `asset_keys` over `partition_names`, as the console's Materialize dialog does."""
    params = {
        "partitionNames": list(partition_names),
        "assetSelection": [{"path": key.split("/")} for key in asset_keys],
        "fromFailure": False,
        "tags": [],
    }
    answer = dev.query(LAUNCH_BACKFILL_MUTATION, {"params": params})["launchPartitionBackfill"]
    if answer["__typename"] != "LaunchBackfillSuccess":
        raise DagsterDevError(f"launchPartitionBackfill: {answer['__typename']}: {answer.get('message')}")
    return str(answer["backfillId"])


def wait_for_backfill(dev: DagsterDev, backfill_id: str, timeout: float) -> dict[str, Any]:
    """Poll the backfill until the daemon reports it finished; returns its status, partitions and runs."""
    deadline = time.monotonic() + timeout
    while True:
        backfill = dev.query(BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
        if backfill["__typename"] != "PartitionBackfill":
            raise DagsterDevError(f"partitionBackfillOrError {backfill_id}: {backfill.get('message')}")
        if backfill["status"] in FINISHED_BACKFILL_STATUSES:
            return backfill
        if time.monotonic() > deadline:
            raise DagsterDevError(
                f"backfill {backfill_id} still {backfill['status']} after {timeout:.0f} s "
                f"(runs: {backfill['runs']}):\n{dev.failures() or dev.log_tail()}"
            )
        time.sleep(1.0)


def materialization_metadata(
    dev: DagsterDev, asset_key: str, partitions: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Latest materialisation of each partition -> its numeric and text metadata, as the console shows it."""
    answer = dev.query(
        MATERIALIZATIONS_QUERY, {"path": asset_key.split("/"), "partitions": list(partitions)}
    )["assetOrError"]
    if answer["__typename"] != "Asset":
        raise DagsterDevError(f"assetOrError {asset_key}: {answer['__typename']} (never materialised?)")
    latest: dict[str, dict[str, Any]] = {}
    for event in answer["assetMaterializations"]:  # newest first
        if event["partition"] not in latest:
            latest[event["partition"]] = {
                entry["label"]: _metadata_value(entry) for entry in event["metadataEntries"]
            }
    return latest


def _metadata_value(entry: Mapping[str, Any]) -> Any:
    kind = entry["__typename"]
    if kind == "IntMetadataEntry":
        return int(entry["intRepr"])
    if kind == "FloatMetadataEntry":
        return entry["floatValue"]
    if kind == "TextMetadataEntry":
        return entry["text"]
    return kind
