"""`LOG_LEVEL` for every line the code location prints: run logs, the code server, the sandbox.

Dagster's console logger prints DEBUG and up whatever the environment says (its level comes from
the run config or the instance's `python_logs.python_log_level`, neither of which can read an
environment variable), and it is created afresh for every run. `logging.disable` is the one switch
every Python logger obeys, Dagster's included, so the definitions module applies `LOG_LEVEL` with it
when it loads: in the code server and in every run process. Structured Dagster events (step started,
materialisation, ...) are still stored in the event log for the UI; only their console lines and the
log messages below `LOG_LEVEL` go.

The value is read leniently here (an unknown level means `info`): the settings check that every run
and tick performs reports an invalid `LOG_LEVEL` together with every other problem.
"""

from __future__ import annotations

import logging
import os

from castai_focus_dagster.settings import LOG_LEVELS

# Python loggers whose lines reach the console of a run or of the code server.
PYTHON_LOGGERS = ("dagster", "castai_focus_dagster")


def log_level_from_env() -> int:
    """`LOG_LEVEL` as a `logging` level number (`info` when unset or unknown)."""
    return LOG_LEVELS.get(os.environ.get("LOG_LEVEL", "info").strip().lower(), logging.INFO)


def apply_log_level(level: int | None = None) -> int:
    """Silence every Python log line below `level` (default: `LOG_LEVEL`) in this process."""
    level = log_level_from_env() if level is None else level
    logging.disable(level - 1)  # disables `level - 1` and everything below it
    for name in PYTHON_LOGGERS:
        logging.getLogger(name).setLevel(level)
    return level
