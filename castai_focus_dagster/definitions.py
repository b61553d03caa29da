"""The code location: every asset, check, job, schedule, sensor and resource, built in one place.

Secrets are wired with `dg.EnvVar`, resolved in the run process; everything else is read from the
environment and validated when a run starts (see resources.py). FOCUS_ALLOCATION_MODE is also read
here: the asset graph depends on it, so a change takes effect when the code location reloads.
"""

import os

import dagster as dg

from castai_focus_dagster.defs.asset_factory import INTERMEDIATES_IO_MANAGER_KEY, PUBLICATION_IO_MANAGER_KEY
from castai_focus_dagster.defs.assets import focus_assets, split_mode
from castai_focus_dagster.defs.checks import FOCUS_CHECKS
from castai_focus_dagster.defs.io_manager import IntermediatesIOManager, PublicationIOManager
from castai_focus_dagster.defs.jobs import focus_export_job
from castai_focus_dagster.defs.resources import CastAIResource, FocusStorageResource, SandboxCastAIResource
from castai_focus_dagster.defs.schedules import focus_restatement_schedule
from castai_focus_dagster.defs.sensors import focus_gap_sensor
from castai_focus_dagster.logs import apply_log_level
from castai_focus_dagster.settings import SANDBOX


def _secret(name: str) -> dg.EnvVar | str:
    """An EnvVar when the variable exists (its value is read at run time); "" when it is not configured."""
    return dg.EnvVar(name) if name in os.environ else ""


def _castai() -> CastAIResource:
    """CASTAI_API_URL=sandbox: the resource that serves the simulated organisation; else the real API's."""
    sandbox = os.environ.get("CASTAI_API_URL", "").strip().lower() == SANDBOX
    return (SandboxCastAIResource if sandbox else CastAIResource)(api_key=_secret("CASTAI_API_KEY"))


apply_log_level()  # LOG_LEVEL for every line of the code server and of each run process

storage = FocusStorageResource(s3_secret_access_key=_secret("S3_SECRET_ACCESS_KEY"))

defs = dg.Definitions(
    assets=focus_assets(split=split_mode()),
    asset_checks=FOCUS_CHECKS,
    jobs=[focus_export_job],
    schedules=[focus_restatement_schedule],
    sensors=[focus_gap_sensor],
    resources={
        "castai": _castai(),
        "storage": storage,
        INTERMEDIATES_IO_MANAGER_KEY: IntermediatesIOManager(storage=storage),
        PUBLICATION_IO_MANAGER_KEY: PublicationIOManager(storage=storage),
    },
    # One run pod per partition range; steps are sequential, so processes would only add memory.
    executor=dg.in_process_executor,
)
