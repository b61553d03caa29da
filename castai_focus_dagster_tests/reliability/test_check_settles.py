"""The checks of a day read one consistent state of it, even while an overlapping run republishes it.

Regression: run A's published-data checks read A's manifest, then an object that run B had just
replaced, and failed the run (seen under load in
test_overlapping_runs_of_one_day_publish_one_after_the_other).
Here the second publication is simulated exactly: the object is replaced by another valid day's bytes, and
that day's manifest lands during the check's first wait — the check must judge the new pair and pass. An
object that keeps differing from its manifest is still reported.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import dagster as dg
import pytest

from castai_focus_dagster.castai.sandbox import SandboxOrg, SandboxServer
from castai_focus_dagster.defs import checks
from castai_focus_dagster.storage.object_store import ObjectStore
from castai_focus_dagster_tests.reliability.harness import DAY, run_day, sandbox_environment

SECOND_DAY = "2026-11-02"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxOrg.generate(seed=5, clusters=2, workloads_per_cluster=3)) as server:
        yield server


def _published(root: Path, day: str) -> tuple[Path, Path]:
    (manifest,) = root.glob(f"metadata/focus-1.3/manifests/**/day={day[-2:]}/manifest.json")
    (data,) = root.glob(f"version=focus-1.3/**/day={day[-2:]}/*.parquet")
    return manifest, data


def _check_failures(outcome: object) -> dict[str, str]:
    failed = {}
    for entry in outcome.events:  # type: ignore[attr-defined]
        event = entry.dagster_event
        if event is not None and event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if not evaluation.passed:
                failed[evaluation.check_name] = evaluation.description or ""
    return failed


@pytest.mark.parametrize("manifest_catches_up", [True, False])
def test_a_day_republished_during_its_check_is_judged_on_the_new_state(
    sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, manifest_catches_up: bool
) -> None:
    root = tmp_path / "out"
    sandbox_environment(monkeypatch, sandbox, LOCAL_OUTPUT_DIR=str(root))
    with dg.instance_for_test() as instance:
        assert run_day(instance, SECOND_DAY).success
        other_manifest, other_data = _published(root, SECOND_DAY)
        open_listed = checks._open_listed
        waits: list[float] = []
        replacement: dict[str, object] = {}

        @contextmanager
        def open_while_run_b_republishes(store: ObjectStore, item: dict[str, Any]) -> Iterator[BinaryIO]:
            """Before the check's first read, "run B" replaces the object: same key, another valid day's
            bytes, its manifest not written yet (the window between B's data and B's manifest)."""
            if not replacement:
                manifest, data = _published(root, DAY)
                replacement.update(json.loads(other_manifest.read_text()))
                replacement["files"][0]["key"] = item["key"]  # type: ignore[index]
                replacement["manifest_path"] = str(manifest)
                data.unlink()  # replaced as a publisher replaces it: a new file under the same key
                shutil.copyfile(other_data, data)
            with open_listed(store, item) as opened:
                yield opened

        def wait(seconds: float) -> None:
            if manifest_catches_up and not waits:  # run B's manifest lands while the check waits
                document = {k: v for k, v in replacement.items() if k != "manifest_path"}
                Path(str(replacement["manifest_path"])).write_text(json.dumps(document))
            waits.append(seconds)

        monkeypatch.setattr(checks, "_open_listed", open_while_run_b_republishes)
        monkeypatch.setattr(checks, "_settle_wait", wait)
        outcome = run_day(instance, DAY)

    failed = _check_failures(outcome)
    if manifest_catches_up:
        assert "focus_manifest_consistency" not in failed and "focus_published_conformance" not in failed
        assert waits and len(waits) < len(checks.SETTLE_DELAYS_SECONDS) * 2
    else:
        assert "differs from its manifest entry" in failed["focus_manifest_consistency"]
        assert waits.count(checks.SETTLE_DELAYS_SECONDS[-1]) >= 1
