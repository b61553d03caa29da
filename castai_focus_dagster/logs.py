"""`LOG_LEVEL` for every line the code location prints: run logs, the code server, the sandbox.

Dagster's default `console` logger prints DEBUG and up whatever the environment says. This module
provides the run's `console` logger at `LOG_LEVEL` and sets the level of the Python loggers the code
server and the run process print through (`dagster`, this package), when the definitions load.
The value is read leniently here (an unknown level means `info`): the settings check that every run
and tick performs reports an invalid `LOG_LEVEL` together with every other problem.
"""

from __future__ import annotations

import logging
import os
import sys

import dagster as dg

from castai_focus_dagster.settings import LOG_LEVELS

LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
# Python loggers whose lines reach the console of a run or of the code server.
PYTHON_LOGGERS = ("dagster", "castai_focus_dagster")


def log_level_from_env() -> int:
    """`LOG_LEVEL` as a `logging` level number (`info` when unset or unknown)."""
    return LOG_LEVELS.get(os.environ.get("LOG_LEVEL", "info").strip().lower(), logging.INFO)


def apply_log_level() -> None:
    """Set `LOG_LEVEL` on the Python loggers of the code server and of the run process."""
    level = log_level_from_env()
    for name in PYTHON_LOGGERS:
        logging.getLogger(name).setLevel(level)


@dg.logger(
    config_schema={"log_level": dg.Field(str, is_required=False, description="Overrides LOG_LEVEL.")},
    description="Console logger at LOG_LEVEL (debug, info, warn, error), for every line a run prints.",
)
def focus_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    configured = str(init_context.logger_config.get("log_level") or "").strip().lower()
    level = LOG_LEVELS.get(configured, log_level_from_env()) if configured else log_level_from_env()
    logger = logging.Logger("dagster", level=level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    return logger
