"""Helpers of the deployment tests: our value sets as the chart receives them, and the few chart
templates the tests mirror, each named after the template it follows."""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from castai_focus_dagster.settings import SETTINGS_DOC, Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
HELM = DEPLOY / "helm"
SHARED = Path(__file__).resolve().parents[3] / "shared"
CHART_REF = SHARED / "reference" / "dagster-helm"

RELEASE = "dagster"  # `helm upgrade --install dagster dagster/dagster` (docs/deployment.md)
NAMESPACE = "castai-focus"
CHART_NAME = "dagster"
SUBCHART_NAME = "dagster-user-deployments"  # renders the code server and its container context
VALUE_SETS: dict[str, list[str]] = {
    "base": ["values.yaml"],
    "staging": ["values.yaml", "values-staging.yaml"],
    "production": ["values.yaml", "values-production.yaml"],
    "local": ["values.yaml", "values-local.yaml"],
}
EKS_SETS = ["base", "staging", "production"]
OVERLAYS = ["staging", "production", "local"]
SETTING_NAMES = {d.env for d in SETTINGS_DOC}
# Derived from the settings model: the fields typed SecretStr are the secrets.
SECRET_SETTINGS = {
    name.upper() for name, field in Settings.model_fields.items() if "SecretStr" in repr(field.annotation)
}


# --------------------------------------------------------------------------------------------------
# Our value sets as the chart receives them
# --------------------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON Merge Patch: maps merge key by key, `null` deletes the key, anything else replaces.

    Helm 4 gives this result for value files applied in order over the chart defaults; Helm 3 differs
    in one corner only: a `null` for a key the chart defaults lack stays as a null instead of deleting
    the key (docs/development.md, "Deployment tests").
    """
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    merged = copy.deepcopy(dict(target)) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def value_files(name: str) -> list[Any]:
    return [load_yaml(HELM / file) for file in VALUE_SETS[name]]


def helm_values(defaults: Mapping[str, Any], files: list[Any]) -> dict[str, Any]:
    """What `helm upgrade -f a -f b` hands the templates: each file patched, in order, over the chart
    defaults (so an overlay's `null` deletes a chart default too)."""
    return functools.reduce(merge_patch, files, dict(defaults))


def user_values(name: str) -> dict[str, Any]:
    """Our files of one value set merged in command-line order (without the chart defaults)."""
    return helm_values({}, value_files(name))


def chart_values(chart_defaults: Mapping[str, Any], name: str) -> dict[str, Any]:
    """One value set as the chart sees it."""
    return helm_values(chart_defaults, value_files(name))


def deployment(vals: Mapping[str, Any]) -> dict[str, Any]:
    (entry,) = vals["dagster-user-deployments"]["deployments"]
    return entry


def env_of(entry: Mapping[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in entry["env"]}


def secret_manifests() -> dict[str, dict[str, str]]:
    """Every Secret defined under deploy/k8s: name -> its keys and (placeholder) values."""
    secrets: dict[str, dict[str, str]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in load_yaml_documents(path):
            if doc.get("kind") == "Secret":
                secrets[doc["metadata"]["name"]] = {**doc.get("stringData", {}), **doc.get("data", {})}
    return secrets


class _AcceptAnything(dict[str, Any]):
    """An empty schema at every JSON pointer: stands in for the remote Kubernetes definitions."""

    def __missing__(self, key: str) -> _AcceptAnything:
        return _AcceptAnything()


def schema_errors(schema: Mapping[str, Any], instance: Any) -> list[str]:
    """Validate offline: the remote Kubernetes `$ref`s resolve to empty (accept-anything) schemas."""

    def retrieve(uri: str) -> Resource:
        return Resource.from_contents(_AcceptAnything(), default_specification=DRAFT202012)

    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, registry=Registry(retrieve=retrieve))  # type: ignore[call-arg]
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(instance)
    ]


# Keys `templates/configmap-instance.yaml` renders from dagsterDaemon.runMonitoring (the block is
# free-form in the schema, so any other key is silently dropped).
CHART_RUN_MONITORING_KEYS = {
    "enabled": "enabled",
    "startTimeoutSeconds": "start_timeout_seconds",
    "cancelTimeoutSeconds": "cancel_timeout_seconds",
    "maxResumeRunAttempts": "max_resume_run_attempts",
    "pollIntervalSeconds": "poll_interval_seconds",
    "freeSlotsAfterRunEndSeconds": "free_slots_after_run_end_seconds",
}


# --------------------------------------------------------------------------------------------------
# The instance the chart renders (dagster.yaml in the `<release>-instance` ConfigMap)
# --------------------------------------------------------------------------------------------------


def _camel_to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def fullname(chart: str = CHART_NAME) -> str:
    """Helper `dagster.fullname` of a chart: the release name when it already contains the chart name."""
    return RELEASE if chart in RELEASE else f"{RELEASE}-{chart}"


def main_service_account(vals: Mapping[str, Any]) -> str:
    return vals["global"].get("serviceAccountName") or vals["serviceAccount"]["name"] or fullname()


def user_deployments_service_account(vals: Mapping[str, Any]) -> str:
    """Helper `dagsterUserDeployments.serviceAccountName`."""
    return (
        vals["global"].get("serviceAccountName")
        or vals["dagster-user-deployments"]["serviceAccount"]["name"]
        or f"{fullname(SUBCHART_NAME)}-user-deployments"
    )


def chart_instance(vals: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of dagster.yaml our values drive, rendered as the chart's templates/configmap-instance.yaml
    and its helpers instance/_run-launcher.tpl, _run-coordinator.tpl, _concurrency.tpl and
    _compute-log-manager.tpl do."""
    daemon = vals["dagsterDaemon"]
    instance: dict[str, Any] = {}

    launcher = vals["runLauncher"]["config"]["k8sRunLauncher"]
    launcher_config: dict[str, Any] = {
        "load_incluster_config": launcher["loadInclusterConfig"],
        "job_namespace": launcher.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": main_service_account(vals),
        "dagster_home": vals["global"]["dagsterHome"],
        "instance_config_map": f"{fullname()}-instance",
        "postgres_password_secret": vals["global"]["postgresqlSecretName"],
    }
    for camel in ("envConfigMaps", "envSecrets"):
        if launcher.get(camel):
            launcher_config[_camel_to_snake(camel)] = [item["name"] for item in launcher[camel]]
    for camel in ("envVars", "volumeMounts", "volumes", "labels", "resources", "securityContext"):
        if launcher.get(camel):
            launcher_config[_camel_to_snake(camel)] = launcher[camel]
    if launcher.get("runK8sConfig"):
        launcher_config["run_k8s_config"] = {
            _camel_to_snake(section): config for section, config in launcher["runK8sConfig"].items() if config
        }
    instance["run_launcher"] = {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher_config}

    coordinator = daemon["runCoordinator"]
    if daemon["enabled"] and coordinator["enabled"]:
        queued = coordinator["config"]["queuedRunCoordinator"]
        config = {_camel_to_snake(k): v for k, v in queued.items() if v is not None and v != []}
        instance["run_coordinator"] = {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            **({"config": config} if config else {}),
        }

    concurrency = vals["concurrency"]
    if concurrency["enabled"]:
        rendered: dict[str, Any] = {}
        pools = {_camel_to_snake(k): v for k, v in concurrency["pools"].items() if v is not None}
        runs = {_camel_to_snake(k): v for k, v in concurrency["runs"].items() if v is not None and v != []}
        if pools:
            rendered["pools"] = pools
        if runs:
            rendered["runs"] = runs
        instance["concurrency"] = rendered

    monitoring = daemon["runMonitoring"]
    if daemon["enabled"] and monitoring["enabled"]:
        instance["run_monitoring"] = {
            CHART_RUN_MONITORING_KEYS[k]: v for k, v in monitoring.items() if v is not None
        }
    retries = daemon["runRetries"]
    if daemon["enabled"] and retries["enabled"]:
        instance["run_retries"] = {_camel_to_snake(k): v for k, v in retries.items() if v is not None}

    logs = vals["computeLogManager"]
    if logs["type"] == "S3ComputeLogManager":
        s3_config = logs["config"]["s3ComputeLogManager"]
        instance["compute_logs"] = {
            "module": "dagster_aws.s3.compute_log_manager",
            "class": "S3ComputeLogManager",
            "config": {_camel_to_snake(k): v for k, v in s3_config.items() if v is not None},
        }
    elif logs["type"] == "NoOpComputeLogManager":
        instance["compute_logs"] = {
            "module": "dagster._core.storage.noop_compute_log_manager",
            "class": "NoOpComputeLogManager",
        }
    instance["telemetry"] = {"enabled": vals["telemetry"]["enabled"]}
    return instance


# Two runs of one day must not interleave their publication: one queued run per partition at a time.
PER_DAY_LIMIT = {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}


def moto_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
