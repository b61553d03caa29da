"""Kubernetes sizing of the run pod that executes `focus_export_job` (value of its `dagster-k8s/config` tag).

Why a job tag: `K8sRunLauncher` builds the run pod from the deployment-wide `runK8sConfig`, the code
location's container context and the **run's tags**; `op_tags` on assets are read only by the
`k8s_job_executor`, which this project does not use. So the size travels on the job. Runs launched
without this job (an ad-hoc "Materialize" in the UI) get `runK8sConfig` merged with the code
server's `resources` instead (deploy/helm/values.yaml keeps the memory figures identical).

Sizing: one in-process run handles one daily partition and holds at most the largest single cluster's
workload-cost table in memory (DESIGN §7.5), so 1 GiB requested with a 2 GiB ceiling leaves headroom for
pyarrow buffers and the Parquet writer. No CPU limit: CPU is compressible and a limit would only
throttle the vectorised transform; the request keeps the scheduler honest.
"""

from __future__ import annotations

from typing import Any

FOCUS_JOB_K8S_CONFIG: dict[str, Any] = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "500m", "memory": "1Gi"},
            "limits": {"memory": "2Gi"},
        },
    },
    "pod_template_spec_metadata": {
        "labels": {
            "app.kubernetes.io/part-of": "castai-focus",
            "castai-focus/job": "focus_export_job",
        },
    },
    "job_spec_config": {
        # Keep finished pods a day for `kubectl logs`; retries belong to Dagster (run retries), not to
        # the Kubernetes Job, which would re-run a failed partition behind Dagster's back.
        "ttl_seconds_after_finished": 86400,
        "backoff_limit": 0,
    },
}
