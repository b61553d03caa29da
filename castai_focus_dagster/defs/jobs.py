"""The one job: the whole asset graph and its checks for the requested daily partitions."""

import dagster as dg

from castai_focus_dagster.defs.k8s import FOCUS_JOB_K8S_CONFIG

focus_export_job = dg.define_asset_job(
    name="focus_export_job",
    selection=dg.AssetSelection.groups("castai", "focus"),
    description="Fetch Cast AI costs and publish FOCUS 1.3 rows for the requested days.",
    # K8sRunLauncher reads pod sizes from run tags only (asset op_tags are ignored): see docs/deployment.md.
    tags={
        "dagster-k8s/config": FOCUS_JOB_K8S_CONFIG,
        # Run monitoring fails a run that hangs this long (a day takes well under a minute, a 7-day
        # backfill run well under an hour on the benchmark organisation at a quarter of the budget).
        "dagster/max_runtime": "10800",
    },
)
