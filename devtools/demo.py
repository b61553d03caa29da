"""`make demo`: the main job on the embedded defaults, end to end, in one command.

Materialises the last 3 complete days plus today from the Cast AI sandbox into LOCAL_OUTPUT_DIR (one
run, one object set per day) on the local Dagster instance, then reads back what it wrote and prints
the files, the totals and two verdicts: the built-in FOCUS conformance checks and, when this clone
sits beside the FinOps Foundation validator (`../shared/focus-validator`), that validator's own.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

DEMO_DAYS = 3
REPO = Path(__file__).resolve().parents[1]
VALIDATOR = REPO.parent / "shared" / "focus-validator" / "validate"
JOB = "focus_export_job"

if TYPE_CHECKING:
    from dagster import DagsterInstance


def local_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The settings `make demo` and `make dev` both run with, on top of `environ` (which wins).

    One source: a day restated in the UI of `make dev` is published with the demo's settings, so its
    bytes are the demo's."""
    env = {"CASTAI_API_URL": environ.get("CASTAI_API_URL", "sandbox")}
    env["DAGSTER_HOME"] = environ.get("DAGSTER_HOME", str(Path(".dagster_home").resolve()))
    if env["CASTAI_API_URL"] == "sandbox":
        from castai_focus_dagster.castai.sandbox import SandboxOrg

        # Show enterprise sub-accounts: the sandbox organisation belongs to an enterprise.
        env["FOCUS_ENTERPRISE_ID"] = environ.get(
            "FOCUS_ENTERPRISE_ID", SandboxOrg.generate(seed=7).enterprise_id
        )
        # Absolute: `make dev`'s runs must write where the demo wrote, whatever their working folder.
        env["LOCAL_OUTPUT_DIR"] = environ.get("LOCAL_OUTPUT_DIR", str(Path("data").resolve()))
    return env


def main() -> int:
    os.environ.update(local_environment(os.environ))
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    if Path("dagster.yaml").exists() and not (home / "dagster.yaml").exists():
        shutil.copy("dagster.yaml", home / "dagster.yaml")

    import dagster as dg

    from castai_focus_dagster.focus.conformance import check_conformance
    from castai_focus_dagster.settings import ConfigError, load_settings
    from castai_focus_dagster.storage.keys import manifest_key
    from castai_focus_dagster.storage.object_store import object_store_from_settings
    from castai_focus_dagster.storage.serialize import read_focus_bytes

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    today = datetime.now(UTC).date()
    first = today - timedelta(days=DEMO_DAYS)
    keys = [(first + timedelta(days=n)).isoformat() for n in range(DEMO_DAYS + 1)]
    print(
        f"castai-focus-dagster demo: {keys[0]} .. {keys[-1]} from {settings.castai_api_url} "
        f"({settings.collection_granularity} buckets)"
    )

    with dg.DagsterInstance.get() as instance:
        success = run_export(instance, keys[0], keys[-1])
    if not success:
        print("the export run failed; see the log above", file=sys.stderr)
        return 1

    store = object_store_from_settings(settings)
    tables: list[pa.Table] = []
    where = (
        f"s3://{settings.s3_bucket}/{settings.s3_prefix}"
        if settings.uses_s3
        else str(Path(settings.local_output_dir).resolve())
    )
    print(f"\nwritten under {where}")
    for key in keys:
        manifest = json.loads(store.get(manifest_key(settings.s3_prefix, datetime.fromisoformat(key).date())))
        totals = manifest["costTotals"]
        partial = "" if manifest.get("complete") else "  (partial day)"
        for item in manifest["files"]:
            if item.get("role", "data") != "data":
                continue
            tables.append(read_focus_bytes(store.get(item["key"]), settings.s3_format))
            print(
                f"  {item['key']}  rows={item['rowCount']:>6}  BilledCost={totals['BilledCost']:.2f}  "
                f"ListCost={totals['ListCost']:.2f}  ContractedCost={totals['ContractedCost']:.2f}{partial}"
            )
        print(f"  manifest: {manifest_key(settings.s3_prefix, datetime.fromisoformat(key).date())}")

    everything = pa.concat_tables(tables)
    failed = [r for r in check_conformance(everything) if not r.passed]
    print(
        f"\nbuilt-in FOCUS 1.3 conformance: {'PASS' if not failed else 'FAIL'} "
        f"({everything.num_rows} rows, {len(failed)} failed rules)"
    )
    for rule in failed:
        print(f"  - {rule.rule}: {rule.message}")
    verdict_ok = _finops_validator(everything)
    print("\nopen the Dagster UI on this history: make dev   (then http://127.0.0.1:3000)")
    return 0 if not failed and verdict_ok else 1


def run_export(instance: DagsterInstance, first: str, last: str) -> bool:
    """Run the export job over the days `first`..`last` here, as `dagster job execute` would, but as a run
    of the code location that `make dev` serves (workspace.yaml): the UI lists a run by that origin, so
    the demo's run shows in the Overview timeline and on the job's page like any other run."""
    # Dagster has no public API for a run with a code-location origin outside the webserver and the
    # daemon; these internals are the ones `dagster job launch` (dagster._cli.job._create_run) and
    # `dagster job execute` use. Without the origin the UI leaves the run out of its timeline.
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.execution.api import execute_run
    from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    (location,) = WorkspaceFileTarget(paths=[str(REPO / "workspace.yaml")]).create_origins()
    target = location.loadable_target_origin
    assert target.module_name, "workspace.yaml loads a python_module"
    # workspace.yaml's working_directory is relative to the file; the code pointer wants it absolute.
    working_directory = str((REPO / (target.working_directory or ".")).resolve())
    repository = ReconstructableRepository.for_module(
        target.module_name, target.attribute or "defs", working_directory
    )
    recon_job = repository.get_reconstructable_job(JOB)
    job_def = recon_job.get_definition()
    run = instance.create_run_for_job(
        job_def=job_def,
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        tags={
            **job_def.tags,
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
            "castai_focus/trigger": "demo",
        },
        remote_job_origin=RemoteJobOrigin(
            RemoteRepositoryOrigin(location, repository.get_definition().name), JOB
        ),
        job_code_origin=recon_job.get_python_origin(),
    )
    return execute_run(recon_job, run, instance).success


def _finops_validator(table: pa.Table) -> bool:
    if not VALIDATOR.exists():
        print(f"FinOps Foundation validator: skipped (not found at {VALIDATOR})")
        return True
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "demo-focus.parquet"
        sink = io.BytesIO()
        pq.write_table(table, sink)
        path.write_bytes(sink.getvalue())
        proc = subprocess.run([str(VALIDATOR), str(path)], capture_output=True, text=True, check=False)
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    print(f"FinOps Foundation validator: {last}")
    return proc.returncode == 0


if __name__ == "__main__":
    sys.exit(main())
