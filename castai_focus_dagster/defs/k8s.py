"""The run pod's size for `focus_export_job`, carried by its `dagster-k8s/config` tag: `K8sRunLauncher`
reads pod settings from run tags, not from asset `op_tags` (docs/architecture.md, "Deployment and
scheduling")."""

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
