"""`make dev` starts the webserver and the daemon quietly, and Ctrl-C stops everything it started."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from castai_focus_dagster_tests.dagster_dev import REPO, free_port


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


MAKE = shutil.which("make") or ""
# What `dagster dev` printed on every start, and any other notice or warning of Dagster's.
NOTICES = re.compile(r"dg dev|superseded|deprecat|warning|traceback|will not be used", re.IGNORECASE)


def _session_processes(session: int) -> list[int]:
    """Every live process of a session (the make, the launcher, both services and their code servers)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def _wait(condition: object, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s:\n{log.read_text(errors='replace')[-4000:]}")
        time.sleep(0.5)


@pytest.mark.integration
@pytest.mark.timeout(240)
@pytest.mark.skipif(not MAKE, reason="no make")
def test_make_dev_starts_quietly_and_stops_on_ctrl_c(exporter_env: Path, tmp_path: Path) -> None:
    import dagster as dg

    home = tmp_path / "dagster_home"  # a fresh instance: the daemon's first start on it
    port = free_port()
    log = tmp_path / "make-dev.log"
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    with log.open("wb") as out:
        make = subprocess.Popen(
            [MAKE, "--no-print-directory", "dev", f"DEV_ARGS=--port {port}"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # As a terminal's shell starts it: a suite launched in the background inherits SIGINT
            # ignored, and make then ignores the Ctrl-C this test sends.
            preexec_fn=_default_sigint,
        )
    try:

        def serving() -> bool:
            assert make.poll() is None, log.read_text(errors="replace")
            try:
                return httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2.0).status_code == 200
            except httpx.TransportError:
                return False

        _wait(serving, 150, "the webserver did not answer", log)

        def daemons_beating() -> bool:
            with dg.DagsterInstance.from_config(str(home)) as instance:
                return "EVENT_LOG_CONSUMER" in instance.get_daemon_heartbeats()

        _wait(daemons_beating, 60, "the run-retry daemon did not start", log)
        time.sleep(2.0)  # its first iteration's log lines
        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C in the terminal: the foreground group
        # make waits for its recipe, then dies of the SIGINT itself, as after any Ctrl-C.
        assert make.wait(timeout=90) == -signal.SIGINT, log.read_text(errors="replace")
        _wait(lambda: not _session_processes(make.pid), 30, "processes outlived Ctrl-C", log)
    finally:
        if _session_processes(make.pid):
            for pid in _session_processes(make.pid):
                os.kill(pid, signal.SIGKILL)

    text = log.read_text(errors="replace")
    assert f"Serving dagster-webserver on http://127.0.0.1:{port}" in text, text
    assert "Instance is configured with the following daemons" in text, text
    assert "Daemon threads shut down" in text, text
    assert not NOTICES.findall(text), text
