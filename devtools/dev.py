"""`make dev`: the Dagster UI on the demo's settings — dagster-webserver and dagster-daemon, side by side.

These are the two services `dagster dev` starts. `dagster dev` itself is superseded in Dagster 1.13 by
`dg dev` (dagster-dg-cli, not a dependency of this project) and says so on every start; started here,
the log holds only what the services report. Each service loads the code location from workspace.yaml
itself. Ctrl-C (or SIGTERM) stops both; either one exiting stops the other.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from devtools.demo import REPO, local_environment

BIN = Path(sys.executable).parent
GRACE_SECONDS = 30.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)

    env = {**os.environ, **local_environment(os.environ)}
    home = Path(env["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    _start_run_retries_at_the_newest_event()

    workspace = ["-w", str(REPO / "workspace.yaml")]
    address = ["-h", args.host, "-p", str(args.port)]
    commands = [
        [str(BIN / "dagster-webserver"), *address, "--dagster-log-level", "info"],
        [str(BIN / "dagster-daemon"), "run", "--log-level", "info"],
    ]
    # Own process groups: a terminal's Ctrl-C reaches this process only, which passes it on once (a
    # second SIGINT makes the webserver quit without shutting down its code server).
    services = [
        subprocess.Popen([*command, *workspace], cwd=REPO, env=env, process_group=0) for command in commands
    ]
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    signal.signal(signal.SIGTERM, lambda *_: _raise_interrupt())
    try:
        while all(service.poll() is None for service in services):
            time.sleep(0.5)
        print("a Dagster service exited; stopping the other", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 0
    _stop(services)
    return code


def _raise_interrupt() -> None:
    raise KeyboardInterrupt


def _stop(services: Sequence[subprocess.Popen[bytes]]) -> None:
    """Ctrl-C for each service still running (they shut down their code servers), then kill stragglers."""
    for service in services:
        if service.poll() is None:
            service.send_signal(signal.SIGINT)
    deadline = time.monotonic() + GRACE_SECONDS
    for service in services:
        try:
            service.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()


def _start_run_retries_at_the_newest_event() -> None:
    """On an instance it has never run on, the daemon's run-retry consumer logs a WARNING per event type
    ("No cursor for event type …, ignoring older events") and starts at the newest event. Start it there
    before the daemon does, so a first `make dev` (e.g. on the demo's history) logs no false alarm."""
    # Internals: the consumer's own cursor keys and writer, so the cursors are the ones it reads.
    import dagster as dg
    from dagster._daemon.auto_run_reexecution import event_log_consumer as consumer

    with dg.DagsterInstance.get() as instance:
        keys = {consumer._create_cursor_key(kind): kind for kind in consumer.DAGSTER_EVENT_TYPES}
        known = instance.daemon_cursor_storage.get_cursor_values(set(keys))
        missing = [kind for key, kind in keys.items() if key not in known]
        if missing:
            newest = instance.event_log_storage.get_maximum_record_id() or 0
            consumer._persist_cursors(instance, dict.fromkeys(missing, newest))


if __name__ == "__main__":
    sys.exit(main())
