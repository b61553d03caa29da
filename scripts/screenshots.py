"""Take the web console screenshots in docs/images/ from a real `dagster dev` run (run by hand).

    apt-get install -y chromium        # a dev tool for this script only, not a project dependency
    .venv/bin/python -m scripts.screenshots

It starts the Cast AI sandbox on 127.0.0.1 and `dagster dev` against it, exactly as
castai_focus_dagster_tests/defs/test_web_console.py does, backfills the last few complete days through the
console's GraphQL mutation, re-materialises yesterday alone (as the restatement schedule does, one day
per run), then photographs the asset graph, the partition view and the materialisation metadata with
headless Chromium. Nothing is written outside a temporary folder except the PNG files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

from castai_focus_dagster.castai.sandbox import SandboxOrg, SandboxServer
from castai_focus_dagster_tests.dagster_dev import (
    REPO,
    DagsterDev,
    dagster_dev,
    launch_asset_backfill,
    wait_for_backfill,
    wait_for_code_location,
)

# Settings a developer may have exported for a real deployment; the screenshots use only the sandbox.
EXPORTER_PREFIXES = ("CASTAI_", "COLLECTION_", "FOCUS_", "S3_", "TERNARY_", "JOB_", "SCHEDULE_")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
    "--virtual-time-budget=15000",
]
# The console's "Join the Dagster community" dialog (shown on localhost) stays away once this has run.
SKIP_COMMUNITY_DIALOG = "mutation { setNuxSeen }"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=5, help="complete days to backfill before yesterday")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "")
    args = parser.parse_args(argv)
    if not args.chromium:
        parser.error("chromium not found: apt-get install -y chromium (or pass --chromium)")

    today = datetime.now(UTC).date()
    yesterday = (today - timedelta(days=1)).isoformat()
    history = [(today - timedelta(days=n)).isoformat() for n in range(args.days + 1, 1, -1)]
    org = SandboxOrg.generate(seed=7)
    with (
        tempfile.TemporaryDirectory(prefix="castai-focus-screenshots-") as tmp,
        SandboxServer(org) as sandbox,
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith(EXPORTER_PREFIXES)}
        env.update(
            CASTAI_API_URL=sandbox.url,
            CASTAI_API_KEY=org.api_key,
            CASTAI_ORGANIZATION_ID=org.organization_id,
            LOCAL_OUTPUT_DIR=str(Path(tmp) / "out"),
        )
        with dagster_dev(Path(tmp) / "dagster_home", env) as dev:
            wait_for_code_location(dev)
            for partitions in (history, [yesterday]):
                backfill = wait_for_backfill(dev, launch_asset_backfill(dev, partitions), timeout=300)
                print(f"backfill {partitions[0]}…{partitions[-1]}: {backfill['status']}", flush=True)
                if backfill["status"] != "COMPLETED_SUCCESS":
                    print(dev.failures() or dev.log_tail(), file=sys.stderr)
                    return 1
            dev.query(SKIP_COMMUNITY_DIALOG)
            args.out.mkdir(parents=True, exist_ok=True)
            asset = "/assets/focus_cost_and_usage"
            pages = {
                "asset-graph.png": f"{asset}?{urlencode({'view': 'lineage', 'lineageScope': 'upstream'})}",
                "partitions.png": f"{asset}?{urlencode({'view': 'partitions', 'partition': yesterday})}",
                "materialization.png": f"{asset}?{urlencode({'view': 'events', 'partition': yesterday})}",
            }
            for name, path in pages.items():
                screenshot(args.chromium, dev, path, args.out / name, Path(tmp) / "chromium")
                print(f"{args.out / name}: {(args.out / name).stat().st_size // 1024} KiB", flush=True)
    return 0


def screenshot(chromium: str, dev: DagsterDev, path: str, target: Path, profile: Path) -> None:
    """One headless Chromium screenshot of a console page; the virtual-time budget lets its queries settle."""
    target.unlink(missing_ok=True)
    command = [
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--screenshot={target}",
        dev.url + path,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 or not target.exists():
        raise RuntimeError(f"chromium could not capture {dev.url + path}: {done.stderr[-2000:]}")


if __name__ == "__main__":
    sys.exit(main())
