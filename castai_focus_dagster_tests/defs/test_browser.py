"""The web UI clicked through in headless Chromium, as an operator does: one day, then a backfill.

`dagster dev` runs against the sandbox over HTTP (as in test_web_console.py); Chromium is Debian's
package (`.ci/run` installs it), driven by Playwright without downloading a browser. Any UI error
fails the test: a console error, an uncaught page error, or an error toast.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from castai_focus_dagster_tests.dagster_dev import (
    REPO,
    DagsterDev,
    DagsterDevError,
    dagster_dev,
    materialization_metadata,
    wait_for_backfill,
    wait_for_code_location,
)

CHROMIUM = shutil.which("chromium") or ""
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
JOB_PAGE = "/locations/__repository__@castai_focus_dagster/jobs/focus_export_job"
RUNS_QUERY = "{ runsOrError { ... on Runs { results { runId jobName status tags { key value } } } } }"
BACKFILLS_QUERY = "{ partitionBackfillsOrError { ... on PartitionBackfills { results { id } } } }"

pytestmark = [
    pytest.mark.skipif(not CHROMIUM, reason="no Chromium: apt-get install -y chromium (.ci/run does it)"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gql.*"),
]


def complete_days(count: int) -> list[str]:
    today = datetime.now(UTC).date()
    return [(today - timedelta(days=n)).isoformat() for n in range(count + 1, 1, -1)]


class UIErrors:
    """Everything the page reports as an error while the test clicks."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.seen: list[str] = []
        page.on(
            "console", lambda msg: self.seen.append(f"console: {msg.text}") if msg.type == "error" else None
        )
        page.on("pageerror", lambda exc: self.seen.append(f"page error: {exc}"))

    def assert_none(self) -> None:
        toasts = [t.inner_text() for t in self.page.locator("[class*=oast]").all()]
        bad = [t for t in toasts if re.search(r"error|fail", t, re.IGNORECASE)]
        assert not self.seen and not bad, self.seen + bad


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh profile every time
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1600, "height": 1000},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def launch_from_job_page(dev: DagsterDev, page: Any, selection: str) -> None:
    """Jobs → focus_export_job → Materialize all…, type the partitions, press the dialog's Launch."""
    page.goto(dev.url + JOB_PAGE, wait_until="networkidle")
    page.get_by_role("button", name="Materialize all").click()
    dialog = page.get_by_role("dialog")
    partitions = dialog.get_by_role("textbox").first
    partitions.fill(selection)
    partitions.press("Enter")
    dialog.get_by_role("button", name=re.compile(r"^Launch")).click()
    dialog.wait_for(state="detached")


def wait_for_runs(dev: DagsterDev, count: int, timeout: float = 150.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        runs = dev.query(RUNS_QUERY)["runsOrError"]["results"]
        done = [r for r in runs if r["status"] in {"SUCCESS", "FAILURE", "CANCELED"}]
        if len(runs) >= count and len(done) == len(runs):
            return runs
        if time.monotonic() > deadline:
            raise DagsterDevError(f"runs not finished after {timeout:.0f} s: {runs}\n{dev.log_tail()}")
        time.sleep(1.0)


@pytest.mark.timeout(420)
def test_one_day_and_a_backfill_clicked_in_the_ui(
    exporter_env: Path, tmp_path: Path, browser_page: Any
) -> None:
    page = browser_page
    errors = UIErrors(page)
    one, *history = complete_days(3)
    with dagster_dev(tmp_path / "dagster_home", os.environ) as dev:
        wait_for_code_location(dev)
        dev.query("mutation { setNuxSeen }")  # the community dialog would cover the page

        launch_from_job_page(dev, page, one)
        (run,) = wait_for_runs(dev, 1)
        assert run["status"] == "SUCCESS", dev.failures() or dev.log_tail()
        # Launched from the job's page: the export job with its tags (K8s pod size), one day.
        tags = {t["key"]: t["value"] for t in run["tags"]}
        assert run["jobName"] == "focus_export_job"
        assert tags["dagster/partition"] == one and "dagster-k8s/config" in tags
        errors.assert_none()

        launch_from_job_page(dev, page, f"[{history[0]}...{history[-1]}]")
        (backfill,) = dev.query(BACKFILLS_QUERY)["partitionBackfillsOrError"]["results"]
        finished = wait_for_backfill(dev, backfill["id"], timeout=200)
        assert finished["status"] == "COMPLETED_SUCCESS", dev.failures() or dev.log_tail()
        assert finished["partitionNames"] == history

        # The asset's partition page renders the days without an error.
        page.goto(f"{dev.url}/assets/focus_cost_and_usage?view=partitions&partition={history[-1]}")
        page.get_by_text("day_status").first.wait_for(timeout=60_000)
        errors.assert_none()
        metadata = materialization_metadata(dev, "focus_cost_and_usage", [one, *history])

    assert sorted(metadata) == sorted([one, *history])
    assert all(day["day_status"] == "complete" for day in metadata.values()), metadata


@pytest.mark.timeout(300)
def test_the_demo_run_shows_in_the_overview_timeline(
    exporter_env: Path, tmp_path: Path, browser_page: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make demo`'s run path on the instance, then the UI on it: the run sits in the export job's row."""
    import dagster as dg
    from playwright.sync_api import TimeoutError as playwright_timeout

    from devtools.demo import run_export

    page = browser_page
    errors = UIErrors(page)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    (day,) = complete_days(1)
    with dg.DagsterInstance.get() as instance:
        assert run_export(instance, day, day)
        (demo_run,) = instance.get_runs()

    with dagster_dev(home, os.environ) as dev:
        wait_for_code_location(dev)
        dev.query("mutation { setNuxSeen }")
        page.goto(dev.url + "/overview/activity/timeline", wait_until="networkidle")
        # The row of focus_export_job (its name links to the job page), not "Jobless asset materializations".
        job_link = page.locator('a[href="/locations/castai_focus_dagster/jobs/focus_export_job"]')
        row = page.locator("[class*=timelineRowContainer]").filter(has=job_link)
        row.first.wait_for(timeout=60_000)
        run_link = page.locator(f'a[href="/runs/{demo_run.run_id}"]')
        for chunk in row.first.locator(".chunk-popover-target").all():  # hovering a run shows its link
            chunk.hover()
            with suppress(playwright_timeout):
                run_link.wait_for(timeout=5_000)
                break
        assert run_link.count(), f"run {demo_run.run_id} not in the timeline's focus_export_job row"
        errors.assert_none()
