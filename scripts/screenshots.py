"""Take the web console screenshots in docs/images/ from the demo's history (run by hand).

    apt-get install -y chromium        # a dev tool, not a project dependency (.ci/run installs it)
    .venv/bin/python -m scripts.screenshots

On a throwaway DAGSTER_HOME against the Cast AI sandbox on 127.0.0.1, it runs what `make demo` runs (the
last 3 complete days plus today, one run), then yesterday alone (as the restatement schedule does), then
starts `dagster dev` on that history and photographs the pages docs/operating.md walks through with
headless Chromium driven by Playwright, as castai_focus_dagster_tests/defs/test_browser.py does. Nothing
is written outside a temporary folder except the PNG files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from castai_focus_dagster.castai.sandbox import SandboxOrg, SandboxServer
from castai_focus_dagster_tests.dagster_dev import REPO, DagsterDev, dagster_dev, wait_for_code_location
from devtools.demo import DEMO_DAYS, run_export

# Settings a developer may have exported for a real deployment; the screenshots use only the sandbox.
EXPORTER_PREFIXES = ("CASTAI_", "COLLECTION_", "FOCUS_", "S3_", "TERNARY_", "JOB_", "SCHEDULE_")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
JOB_PAGE = "/locations/__repository__@castai_focus_dagster/jobs/focus_export_job"
MAX_BYTES = 300_000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "")
    args = parser.parse_args(argv)
    if not args.chromium:
        parser.error("chromium not found: apt-get install -y chromium (or pass --chromium)")

    import dagster as dg
    from playwright.sync_api import sync_playwright

    today = datetime.now(UTC).date()
    first = (today - timedelta(days=DEMO_DAYS)).isoformat()
    yesterday = (today - timedelta(days=1)).isoformat()
    org = SandboxOrg.generate(seed=7)
    with (
        tempfile.TemporaryDirectory(prefix="castai-focus-screenshots-") as tmp,
        SandboxServer(org) as sandbox,
    ):
        home = Path(tmp) / "dagster_home"
        home.mkdir()
        shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
        for name in [n for n in os.environ if n.startswith(EXPORTER_PREFIXES)]:
            del os.environ[name]
        os.environ.update(
            DAGSTER_HOME=str(home),
            CASTAI_API_URL=sandbox.url,
            CASTAI_API_KEY=org.api_key,
            CASTAI_ORGANIZATION_ID=org.organization_id,
            FOCUS_ENTERPRISE_ID=org.enterprise_id,  # as `make demo` sets it
            LOCAL_OUTPUT_DIR=str(Path(tmp) / "out"),
        )
        with dg.DagsterInstance.get() as instance:
            for start, end in ((first, today.isoformat()), (yesterday, yesterday)):
                if not run_export(instance, start, end):
                    print(f"the export run {start}..{end} failed", file=sys.stderr)
                    return 1
        with dagster_dev(home, os.environ) as dev, sync_playwright() as playwright:
            wait_for_code_location(dev)
            dev.query("mutation { setNuxSeen }")  # the community dialog would cover the page
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            args.out.mkdir(parents=True, exist_ok=True)
            take_all(dev, page, args.out, yesterday)
            browser.close()
    too_big = [p for p in sorted(args.out.glob("*.png")) if p.stat().st_size > MAX_BYTES]
    for path in sorted(args.out.glob("*.png")):
        print(f"{path}: {path.stat().st_size // 1024} KiB", flush=True)
    return 1 if too_big else 0


def take_all(dev: DagsterDev, page: Any, out: Path, day: str) -> None:
    """The pages of the walk-through, each once the text that proves it has loaded is on screen."""
    asset = f"{dev.url}/assets/focus_cost_and_usage"
    shots = {
        "timeline.png": (f"{dev.url}/overview/activity/timeline", "focus_export_job"),
        "asset-graph.png": (f"{asset}?{urlencode({'view': 'lineage', 'lineageScope': 'upstream'})}", None),
        "partitions.png": (f"{asset}?{urlencode({'view': 'partitions', 'partition': day})}", "day_status"),
        "materialization.png": (f"{asset}?{urlencode({'view': 'events', 'partition': day})}", "day_status"),
    }
    for name, (url, text) in shots.items():
        # The events page is tall: the whole metadata table, down to the FinOps entries, in one picture.
        page.set_viewport_size({"width": 1600, "height": 2300 if name == "materialization.png" else 1000})
        page.goto(url, wait_until="networkidle")
        if text:
            page.get_by_text(text).first.wait_for(timeout=60_000)
        page.wait_for_timeout(2_000)  # charts and layout settle
        page.screenshot(path=str(out / name))
    # Jobs → focus_export_job → Materialize all…: the dialog with a range of days typed, not launched.
    page.goto(dev.url + JOB_PAGE, wait_until="networkidle")
    page.get_by_role("button", name="Materialize all").click()
    dialog = page.get_by_role("dialog")
    partitions = dialog.get_by_role("textbox").first
    partitions.fill(f"[{day[:8]}01...{day}]")
    partitions.press("Enter")
    page.wait_for_timeout(2_000)
    page.screenshot(path=str(out / "backfill-dialog.png"))


if __name__ == "__main__":
    sys.exit(main())
