"""The FinOps Foundation's focus-validator (FOCUS 1.3 model) reports 0 failed rules on our output.

Three validator runs, started together: the synthetic organisation's hourly export as Parquet, its
daily export as CSV, and a negative control (the original exporter's ServiceSubcategory
"Kubernetes Optimization"), which proves a failure is detected and reported. The first run ever
creates the validator's virtualenv (1-2 minutes); later runs take about 20 s each.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest

from castai_focus_dagster.focus.transform import to_focus
from castai_focus_dagster.storage.serialize import to_csv_bytes, to_parquet_bytes
from castai_focus_dagster_tests.focus_inputs import focus_options, synthetic_org

VALIDATOR = Path(
    os.environ.get("FOCUS_VALIDATOR")
    or Path(__file__).resolve().parents[3] / "shared/focus-validator/validate"
)
VERDICT = re.compile(r"^focus-validator 1\.3: Total (\d+) \| Pass (\d+) \| Fail (\d+) \|", re.MULTILINE)

pytestmark = pytest.mark.timeout(900)


def _validator_venv_ready() -> bool:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = Path(os.environ.get("FOCUS_VALIDATOR_VENV") or cache / "focus-validator-2.2.1")
    return (venv / "bin/focus-validator").exists()


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    if not VALIDATOR.exists():
        pytest.skip(
            f"FinOps FOCUS validator not found at {VALIDATOR}: conformance is still checked by "
            "castai_focus_dagster.focus.conformance"
        )
    folder = tmp_path_factory.mktemp("focus-validator")
    org = synthetic_org()
    # List prices as published: listing reports for the cloud clusters, default pricing for Anywhere.
    hourly = to_focus(org.hourly, org.clusters, org.context, focus_options(), listing=org.listing)
    daily = to_focus(org.daily, org.clusters, org.context, focus_options(), listing=org.listing)
    index = daily.schema.get_field_index("ServiceSubcategory")
    broken = daily.set_column(
        index, daily.schema.field(index), pa.repeat(pa.scalar("Kubernetes Optimization"), daily.num_rows)
    )
    files = {
        "hourly.parquet": to_parquet_bytes(hourly),
        "daily.csv": to_csv_bytes(daily),
        "broken.parquet": to_parquet_bytes(broken),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)

    def start(name: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(VALIDATOR), str(folder / name)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    names = list(files)
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    if not _validator_venv_ready():  # the first run installs the virtualenv: never race two installs
        first = start(names[0])
        results[names[0]] = subprocess.CompletedProcess(first.args, first.wait(), first.communicate()[0], "")
    running = {name: start(name) for name in names if name not in results}
    for name, process in running.items():
        output, _ = process.communicate()
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, output, "")
    unusable = [r for r in results.values() if r.returncode == 2]
    if unusable:
        pytest.skip(f"FinOps FOCUS validator could not run: {unusable[0].stdout.strip()[-400:]}")
    return results


def verdict(result: subprocess.CompletedProcess[str]) -> tuple[int, int, int]:
    match = VERDICT.search(result.stdout)
    assert match, result.stdout[-2000:]
    total, passed, failed = (int(g) for g in match.groups())
    return total, passed, failed


@pytest.mark.parametrize("name", ["hourly.parquet", "daily.csv"])
def test_export_has_zero_failed_rules(
    verdicts: dict[str, subprocess.CompletedProcess[str]], name: str
) -> None:
    result = verdicts[name]
    last_line = result.stdout.strip().splitlines()[-1]
    total, passed, failed = verdict(result)
    assert (result.returncode, failed) == (0, 0), result.stdout[-4000:]
    assert "Fail 0" in last_line
    assert total > 700 and passed > 250  # the 1.3 model ran, not an empty rule set


def test_validator_catches_a_broken_export(verdicts: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = verdicts["broken.parquet"]
    _, _, failed = verdict(result)
    assert result.returncode != 0 and failed > 0
    assert "ServiceSubcategory" in result.stdout
