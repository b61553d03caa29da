"""The Kubernetes deployment (deploy/): Helm values, run pod, IAM, image, local evaluation - all offline.

No helm, docker or cluster here, so each claim is checked with the real component that will consume it:
the chart's JSON schemas (shared/reference/dagster-helm), Dagster's own instance validation, dagster-k8s's
launcher and job builder, the exporter's settings loader and publisher against a moto S3 server on
127.0.0.1. Where the chart's Go templates turn values into config, the few templates involved are
mirrored below and named, so a chart change has one obvious place to follow.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib.util
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import jsonschema
import kubernetes
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from castai_focus_dagster.defs.k8s import FOCUS_JOB_K8S_CONFIG
from castai_focus_dagster.settings import LOG_LEVELS, SETTINGS_DOC, Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
HELM = DEPLOY / "helm"
SHARED = Path(__file__).resolve().parents[2] / "shared"
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
# Loading and merging values the way Helm does
# --------------------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def helm_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's coalescing: maps merge key by key, lists and scalars replace, `null` deletes the key."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping):
            below = merged.get(key)
            merged[key] = helm_merge(below if isinstance(below, Mapping) else {}, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@pytest.fixture(scope="module")
def chart_ref() -> Path:
    if not CHART_REF.is_dir():
        pytest.skip(f"chart reference files not found at {CHART_REF} (shared/ is not next to the repo)")
    return CHART_REF


@pytest.fixture(scope="module")
def chart_defaults(chart_ref: Path) -> dict[str, Any]:
    return load_yaml(chart_ref / "values-1.12.19.yaml")


def user_values(name: str) -> dict[str, Any]:
    """Our files of one value set merged in command-line order (without the chart defaults)."""
    merged: dict[str, Any] = {}
    for file in VALUE_SETS[name]:
        merged = helm_merge(merged, load_yaml(HELM / file))
    return merged


@pytest.fixture(scope="module")
def values(chart_defaults: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each value set as the chart sees it: chart defaults, then values.yaml, then the overlay."""
    return {name: helm_merge(chart_defaults, user_values(name)) for name in VALUE_SETS}


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


# --------------------------------------------------------------------------------------------------
# Every file parses
# --------------------------------------------------------------------------------------------------

DEPLOY_DATA_FILES = sorted(
    p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml", ".json"} and p.is_file()
)


def test_deploy_holds_the_expected_files() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in DEPLOY_DATA_FILES}
    assert {
        "helm/values.yaml",
        "helm/values-staging.yaml",
        "helm/values-production.yaml",
        "helm/values-local.yaml",
        "k8s/minio.yaml",
        "k8s/secrets.example.yaml",
        "iam/s3-writer-policy.json",
        "iam/irsa-trust-policy.json",
        "iam/ternary-bucket-policy.json",
    } <= names


@pytest.mark.parametrize("path", DEPLOY_DATA_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_yaml_and_json_file_parses(path: Path) -> None:
    if path.suffix == ".json":
        assert isinstance(json.loads(path.read_text()), dict)
    else:
        documents = load_yaml_documents(path)
        assert documents and all(isinstance(doc, dict) for doc in documents)


# --------------------------------------------------------------------------------------------------
# The chart's schemas
# --------------------------------------------------------------------------------------------------


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


@pytest.mark.parametrize("value_set", VALUE_SETS)
@pytest.mark.parametrize(
    "schema_file", ["values.schema-1.12.19.json", "values.schema-upstream-2bdb2395.json"]
)
def test_merged_values_validate_against_the_chart_schema(
    chart_ref: Path, values: dict[str, dict[str, Any]], value_set: str, schema_file: str
) -> None:
    schema = json.loads((chart_ref / schema_file).read_text())
    instance = copy.deepcopy(values[value_set])
    if "ui" in schema.get("required", []):
        instance.setdefault("ui", {})  # the upstream head requires a top-level `ui` (README of the reference)
    assert schema_errors(schema, instance) == []


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_user_deployments_validate_against_the_subchart_schema(
    chart_ref: Path, values: dict[str, dict[str, Any]], value_set: str
) -> None:
    schema = json.loads((chart_ref / "user-deployments.values.schema-1.12.19.json").read_text())
    # The subchart's own defaults are not in the reference, so its top-level `required` list (all keys
    # those defaults supply) is dropped; everything we set is still checked, including `global`.
    schema.pop("required", None)
    section = {**values[value_set]["dagster-user-deployments"], "global": values[value_set]["global"]}
    assert schema_errors(schema, section) == []


def user_deployment_properties(schema_path: Path) -> set[str]:
    return set(json.loads(schema_path.read_text())["$defs"]["UserDeployment"]["properties"])


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_deployment_entry_has_no_key_the_chart_ignores(
    chart_ref: Path, values: dict[str, dict[str, Any]], value_set: str
) -> None:
    """The schema lets a typo (`envSecret`) through; the chart would silently drop it."""
    known = user_deployment_properties(chart_ref / "user-deployments.values.schema-1.12.19.json")
    known &= user_deployment_properties(chart_ref / "values.schema-upstream-2bdb2395.json")
    assert set(deployment(values[value_set])) - known == set()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_restate_the_whole_deployment_entry(overlay: str) -> None:
    """Helm replaces lists, so an overlay's entry must carry every key and variable of the base entry."""
    base = deployment(user_values("base"))
    entry = deployment(user_values(overlay))
    assert set(entry) == set(base)
    assert entry["name"] == base["name"]
    assert entry["codeServerArgs"] == base["codeServerArgs"] and entry["port"] == base["port"]
    provided_by_secrets = {
        key for ref in entry.get("envSecrets", []) for key in secret_manifests().get(ref["name"], {})
    }
    assert set(env_of(base)) - set(env_of(entry)) <= provided_by_secrets


# --------------------------------------------------------------------------------------------------
# What the schema leaves free-form: Kubernetes object keys, run monitoring, quantities
# --------------------------------------------------------------------------------------------------


def _k8s_model(type_name: str) -> type | None:
    inner = type_name.removeprefix("list[").removesuffix("]")
    return getattr(kubernetes.client, inner, None) if re.fullmatch(r"V\d\w+", inner) else None


def unknown_k8s_keys(model: type, data: Mapping[str, Any], path: str) -> list[str]:
    """Keys of `data` that are not fields (camelCase or snake_case) of the Kubernetes model, recursively."""
    attribute_map: dict[str, str] = model.attribute_map  # type: ignore[attr-defined]
    by_key = {**{camel: attr for attr, camel in attribute_map.items()}, **{a: a for a in attribute_map}}
    problems = []
    for key, value in data.items():
        attr = by_key.get(key)
        if attr is None:
            problems.append(f"{path}.{key}")
            continue
        nested = _k8s_model(model.openapi_types[attr])  # type: ignore[attr-defined]
        if nested is None:
            continue
        if isinstance(value, Mapping):
            problems += unknown_k8s_keys(nested, value, f"{path}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    problems += unknown_k8s_keys(nested, item, f"{path}.{key}[{index}]")
    return problems


RUN_K8S_CONFIG_MODELS = {
    "containerConfig": kubernetes.client.V1Container,
    "podSpecConfig": kubernetes.client.V1PodSpec,
    "podTemplateSpecMetadata": kubernetes.client.V1ObjectMeta,
    "jobSpecConfig": kubernetes.client.V1JobSpec,
    "jobMetadata": kubernetes.client.V1ObjectMeta,
}
FOCUS_TAG_MODELS = {
    "container_config": kubernetes.client.V1Container,
    "pod_spec_config": kubernetes.client.V1PodSpec,
    "pod_template_spec_metadata": kubernetes.client.V1ObjectMeta,
    "job_spec_config": kubernetes.client.V1JobSpec,
    "job_metadata": kubernetes.client.V1ObjectMeta,
}


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_kubernetes_objects_in_values_use_only_real_fields(
    values: dict[str, dict[str, Any]], value_set: str
) -> None:
    vals = values[value_set]
    run_k8s_config = vals["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    entry = deployment(vals)
    problems = [
        problem
        for section, data in run_k8s_config.items()
        for problem in unknown_k8s_keys(RUN_K8S_CONFIG_MODELS[section], data, f"runK8sConfig.{section}")
    ]
    problems += unknown_k8s_keys(kubernetes.client.V1ResourceRequirements, entry["resources"], "resources")
    problems += unknown_k8s_keys(
        kubernetes.client.V1SecurityContext, entry["securityContext"], "securityContext"
    )
    problems += unknown_k8s_keys(
        kubernetes.client.V1PodSecurityContext, entry["podSecurityContext"], "podSecurityContext"
    )
    assert problems == []


def test_job_tag_uses_only_real_kubernetes_fields() -> None:
    problems = [
        problem
        for section, data in FOCUS_JOB_K8S_CONFIG.items()
        for problem in unknown_k8s_keys(FOCUS_TAG_MODELS[section], data, section)
    ]
    assert problems == []


def resource_blocks(vals: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    run_k8s_config = vals["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    return {
        "job tag": FOCUS_JOB_K8S_CONFIG["container_config"]["resources"],
        "runK8sConfig": run_k8s_config["containerConfig"]["resources"],
        "code server": deployment(vals)["resources"],
        "webserver": vals["dagsterWebserver"]["resources"],
        "daemon": vals["dagsterDaemon"]["resources"],
    }


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_resource_quantities_parse_and_requests_fit_limits(
    values: dict[str, dict[str, Any]], value_set: str
) -> None:
    from kubernetes.utils import parse_quantity

    for owner, block in resource_blocks(values[value_set]).items():
        requests, limits = block.get("requests", {}), block.get("limits", {})
        assert "memory" in requests and "memory" in limits, f"{owner}: memory request and limit expected"
        assert "cpu" not in limits, f"{owner}: a CPU limit only throttles; requests are enough"
        for resource, limit in limits.items():
            assert parse_quantity(requests.get(resource, "0")) <= parse_quantity(limit), (owner, resource)


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


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_run_monitoring_keys_are_rendered_by_the_chart_and_known_to_dagster(
    values: dict[str, dict[str, Any]], value_set: str
) -> None:
    from dagster._core.instance.config import dagster_instance_config_schema

    run_monitoring = values[value_set]["dagsterDaemon"]["runMonitoring"]
    assert set(run_monitoring) <= set(CHART_RUN_MONITORING_KEYS)
    run_monitoring_type: Any = dagster_instance_config_schema()["run_monitoring"].config_type
    dagster_fields = set(run_monitoring_type.fields)
    assert set(CHART_RUN_MONITORING_KEYS.values()) <= dagster_fields
    assert run_monitoring["enabled"] is True and run_monitoring["freeSlotsAfterRunEndSeconds"] > 0


# --------------------------------------------------------------------------------------------------
# Exporter settings and secrets
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_env_holds_exactly_the_exporter_settings_and_no_secret(
    values: dict[str, dict[str, Any]], value_set: str
) -> None:
    entry = deployment(values[value_set])
    names = [item["name"] for item in entry["env"]]
    assert len(names) == len(set(names)), "duplicate variables"
    assert set(names) <= SETTING_NAMES, set(names) - SETTING_NAMES
    assert not set(names) & SECRET_SETTINGS, "secrets must come from envSecrets, never from env"
    assert all(set(item) == {"name", "value"} for item in entry["env"]), (
        "no valueFrom: secrets via envSecrets"
    )
    secrets = secret_manifests()
    from_secrets = {key for ref in entry["envSecrets"] for key in secrets[ref["name"]]}
    missing = (SETTING_NAMES - SECRET_SETTINGS) - set(names) - from_secrets
    assert missing == set(), f"non-secret settings missing from env: {sorted(missing)}"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_referenced_secret_is_templated_with_exporter_keys(
    values: dict[str, dict[str, Any]], value_set: str
) -> None:
    vals = values[value_set]
    secrets = secret_manifests()
    for ref in deployment(vals)["envSecrets"]:
        assert ref["name"] in secrets, f"Secret {ref['name']} has no template under deploy/k8s"
        assert set(secrets[ref["name"]]) <= SETTING_NAMES
    if not vals["generatePostgresqlPasswordSecret"]:
        assert set(secrets[vals["global"]["postgresqlSecretName"]]) == {"postgresql-password"}


@pytest.mark.parametrize("value_set", EKS_SETS)
def test_eks_uses_irsa_and_the_api_key_secret(values: dict[str, dict[str, Any]], value_set: str) -> None:
    vals = values[value_set]
    entry = deployment(vals)
    secrets = secret_manifests()
    provided = {key for ref in entry["envSecrets"] for key in secrets[ref["name"]]}
    assert provided == {"CASTAI_API_KEY"}
    assert env_of(entry)["S3_ACCESS_KEY_ID"] == "" and env_of(entry)["S3_ENDPOINT_URL"] == ""
    role = vals["dagster-user-deployments"]["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", role)
    assert vals["computeLogManager"]["type"] == "S3ComputeLogManager"
    assert not vals["postgresql"]["enabled"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_values_form_a_valid_exporter_configuration(
    values: dict[str, dict[str, Any]], value_set: str
) -> None:
    """The exact environment a run pod gets, fed to the exporter's own loader (secrets: template values)."""
    entry = deployment(values[value_set])
    environ = dict(env_of(entry))
    secrets = secret_manifests()
    for ref in entry["envSecrets"]:
        environ.update(secrets[ref["name"]])
    settings = load_settings(environ)
    assert settings.uses_s3
    if value_set == "local":
        assert settings.is_sandbox and settings.s3_endpoint_url


def test_local_set_is_self_contained(values: dict[str, dict[str, Any]]) -> None:
    vals = values["local"]
    annotations = [
        vals["serviceAccount"]["annotations"],
        vals["dagster-user-deployments"]["serviceAccount"]["annotations"],
    ]
    assert all("eks.amazonaws.com/role-arn" not in a for a in annotations)
    assert vals["postgresql"]["enabled"] and vals["generatePostgresqlPasswordSecret"]
    assert vals["computeLogManager"]["type"] == "NoOpComputeLogManager"
    minio_service = next(
        d for d in load_yaml_documents(DEPLOY / "k8s" / "minio.yaml") if d["kind"] == "Service"
    )
    endpoint = env_of(deployment(vals))["S3_ENDPOINT_URL"]
    port = next(p["port"] for p in minio_service["spec"]["ports"] if p["name"] == "s3")
    assert endpoint == f"http://{minio_service['metadata']['name']}:{port}"


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


def processed(config_type: Any, value: Any) -> Any:
    from dagster._config import process_config
    from dagster._config.field import resolve_to_config_type

    result = process_config(resolve_to_config_type(config_type), value)
    assert result.success, [error.message for error in result.errors or []]
    return result.value


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rendered_instance_is_accepted_by_dagster(
    values: dict[str, dict[str, Any]], value_set: str, tmp_path: Path
) -> None:
    """Dagster's own loader: catches e.g. run limits set both in runCoordinator and in concurrency."""
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
    from dagster_k8s import K8sRunLauncher

    instance = chart_instance(values[value_set])
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance))
    config, _ = dagster_instance_config(str(tmp_path))
    processed(K8sRunLauncher.config_type(), instance["run_launcher"]["config"])
    processed(QueuedRunCoordinator.config_type(), instance["run_coordinator"].get("config", {}))
    if instance["compute_logs"]["class"] == "S3ComputeLogManager":
        processed(S3ComputeLogManager.config_type(), instance["compute_logs"]["config"])
    assert config["run_retries"]["retry_on_asset_or_op_failure"] is False
    backfill_limits = [
        limit
        for limit in config["concurrency"]["runs"]["tag_concurrency_limits"]
        if limit["key"] == "dagster/backfill"
    ]
    assert len(backfill_limits) == 1 and "value" not in backfill_limits[0], "one cap across all backfill runs"
    assert backfill_limits[0]["limit"] < config["concurrency"]["runs"]["max_concurrent_runs"]
    pools = config["concurrency"]["pools"]
    assert pools["default_limit"] >= 1  # the castai_api pool is bounded
    # Each run's client gets budget / slots: a slot per backfill run, held only while a step calls the API.
    assert pools["granularity"] == "op"
    runs = config["concurrency"]["runs"]["max_concurrent_runs"]
    assert backfill_limits[0]["limit"] <= pools["default_limit"] <= runs
    assert PER_DAY_LIMIT in config["concurrency"]["runs"]["tag_concurrency_limits"]


# Two runs of one day must not interleave their publication: one queued run per partition at a time.
PER_DAY_LIMIT = {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}


# --------------------------------------------------------------------------------------------------
# The run pod, built by dagster-k8s exactly as K8sRunLauncher builds it
# --------------------------------------------------------------------------------------------------


def chart_container_context(vals: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """Helper `dagsterUserDeployments.k8sContainerContext` (includeConfigInLaunchedRuns): what the code
    server hands to every run it launches."""
    k8s: dict[str, Any] = {
        "image_pull_policy": entry["image"]["pullPolicy"],
        "env_config_maps": [f"{fullname(SUBCHART_NAME)}-{entry['name']}-user-env"]
        + [item["name"] for item in entry.get("envConfigMaps") or []],
        "namespace": NAMESPACE,
        "service_account_name": user_deployments_service_account(vals),
    }
    if entry.get("envSecrets"):
        k8s["env_secrets"] = [item["name"] for item in entry["envSecrets"]]
    for camel in ("volumeMounts", "volumes", "labels", "resources", "schedulerName"):
        if entry.get(camel):
            k8s[_camel_to_snake(camel)] = entry[camel]
    if isinstance(entry.get("env"), list) and entry["env"]:
        k8s["env"] = entry["env"]
    return {"k8s": k8s}


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig pointing nowhere: the launcher loads it but no test talks to a cluster."""
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "none", "user": {"token": "unused"}}],
                "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
                "current-context": "none",
            }
        )
    )
    return path


def run_pod_job(vals: Mapping[str, Any], tags: Mapping[str, str], kubeconfig: Path) -> dict[str, Any]:
    """The Kubernetes Job a run of the code location gets: launcher from the rendered instance, container
    context from the user deployment, the run's tags; then the launcher's own merge and job builder."""
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.job import construct_dagster_k8s_job, get_job_name_from_run_id

    launcher_config = processed(K8sRunLauncher.config_type(), chart_instance(vals)["run_launcher"]["config"])
    launcher = K8sRunLauncher(
        **{**launcher_config, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    )
    entry = deployment(vals)
    image = f"{entry['image']['repository']}:{entry['image']['tag']}"
    origin = JobPythonOrigin(
        "focus_export_job",
        RepositoryPythonOrigin(
            executable_path=sys.executable,
            code_pointer=ModuleCodePointer("castai_focus_dagster.definitions", "defs", "/opt/dagster/app"),
            container_image=image,
            container_context=chart_container_context(vals, entry),
        ),
    )
    run = DagsterRun(
        job_name="focus_export_job", run_id=str(uuid.uuid4()), tags=dict(tags), job_code_origin=origin
    )
    context = launcher.get_container_context_for_run(run)
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=image, run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"],
        job_name=get_job_name_from_run_id(run.run_id),
        user_defined_k8s_config=context.run_k8s_config,
        component="run_worker",
        labels={"dagster/job": "focus_export_job", "dagster/run-id": run.run_id},
    )
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)


def focus_job_tags() -> Mapping[str, str]:
    """The tags Dagster stores on a run of focus_export_job (normalized to JSON strings)."""
    from castai_focus_dagster.defs.jobs import focus_export_job

    return focus_export_job.tags or {}


def test_focus_export_job_carries_the_k8s_tag() -> None:
    from dagster_k8s.job import USER_DEFINED_K8S_CONFIG_KEY

    assert json.loads(focus_job_tags()[USER_DEFINED_K8S_CONFIG_KEY]) == FOCUS_JOB_K8S_CONFIG


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_focus_job_run_pod_gets_its_size_account_env_and_secrets(
    values: dict[str, dict[str, Any]], value_set: str, kubeconfig: Path
) -> None:
    vals = values[value_set]
    entry = deployment(vals)
    job = run_pod_job(vals, focus_job_tags(), kubeconfig)
    pod = job["spec"]["template"]
    (container,) = pod["spec"]["containers"]

    expected_resources = FOCUS_JOB_K8S_CONFIG["container_config"]["resources"]
    assert container["resources"] == expected_resources, "the job tag must win over every default"
    assert container["image"] == f"{entry['image']['repository']}:{entry['image']['tag']}"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False

    service_account = pod["spec"]["serviceAccountName"]
    assert service_account == user_deployments_service_account(vals)
    pinned = vals["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]
    assert service_account == pinned["serviceAccountName"]
    if value_set in EKS_SETS:
        annotations = vals["dagster-user-deployments"]["serviceAccount"]["annotations"]
        assert annotations["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")

    env = {item["name"]: item.get("value") for item in container["env"]}
    assert {name: env[name] for name in env_of(entry)} == env_of(entry)
    assert not set(env) & SECRET_SETTINGS
    secret_refs = {source["secretRef"]["name"] for source in container["envFrom"] if "secretRef" in source}
    assert secret_refs == {ref["name"] for ref in entry["envSecrets"]}
    assert env["DAGSTER_PG_PASSWORD"] is None  # from the postgres secret, by reference

    labels = FOCUS_JOB_K8S_CONFIG["pod_template_spec_metadata"]["labels"]
    assert labels.items() <= pod["metadata"]["labels"].items()
    assert (
        job["spec"]["ttlSecondsAfterFinished"]
        == FOCUS_JOB_K8S_CONFIG["job_spec_config"]["ttl_seconds_after_finished"]
    )
    assert job["spec"]["backoffLimit"] == FOCUS_JOB_K8S_CONFIG["job_spec_config"]["backoff_limit"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_ad_hoc_run_pod_gets_the_same_memory_as_the_job(
    values: dict[str, dict[str, Any]], value_set: str, kubeconfig: Path
) -> None:
    """A UI "Materialize" has no job tag: runK8sConfig merged with the code server's resources applies."""
    vals = values[value_set]
    job = run_pod_job(vals, {}, kubeconfig)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    defaults = vals["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]["resources"]
    assert container["resources"] == helm_merge(defaults, deployment(vals)["resources"])
    tagged = FOCUS_JOB_K8S_CONFIG["container_config"]["resources"]
    assert container["resources"]["limits"]["memory"] == tagged["limits"]["memory"]
    if value_set in EKS_SETS:
        assert container["resources"]["requests"]["memory"] == tagged["requests"]["memory"]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == user_deployments_service_account(vals)


# --------------------------------------------------------------------------------------------------
# IAM: the policies allow every S3 call the exporter and Dagster make, and nothing else
# --------------------------------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"<[A-Z_]+>")
OIDC_PROVIDER = "oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"


def policy_text(name: str) -> str:
    return (DEPLOY / "iam" / name).read_text()


def render_policy(name: str, substitutions: Mapping[str, str]) -> dict[str, Any]:
    text = policy_text(name)
    for placeholder, value in substitutions.items():
        text = text.replace(f"<{placeholder}>", value)
    leftover = PLACEHOLDER.findall(text)
    assert leftover == [], f"{name}: unreplaced placeholders {leftover}"
    return json.loads(text)


def iam_substitutions(vals: Mapping[str, Any]) -> dict[str, str]:
    env = env_of(deployment(vals))
    logs = vals["computeLogManager"]["config"]["s3ComputeLogManager"]
    role = vals["dagster-user-deployments"]["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"]
    return {
        "BUCKET": env["S3_BUCKET"],
        "PREFIX": env["S3_PREFIX"],
        "TERNARY_PREFIX": env["TERNARY_PATH_PREFIX"],
        "LOGS_BUCKET": logs["bucket"],
        "LOGS_PREFIX": logs["prefix"],
        "ACCOUNT_ID": role.split(":")[4],
        "OIDC_PROVIDER": OIDC_PROVIDER,
        "NAMESPACE": NAMESPACE,
        "TERNARY_ACCOUNT_ID": "999988887777",
        "TERNARY_ROLE_NAME": "ternary-byod-reader",
    }


Request = tuple[str, str, tuple[tuple[str, str], ...]]  # (action, resource ARN, condition context)


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def _iam_match(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def matching_statements(policy: Mapping[str, Any], request: Request) -> list[int]:
    """Indexes of Allow statements that grant `request` (IAM wildcards; StringLike[IfExists] conditions)."""
    action, resource, context_items = request
    context = dict(context_items)
    hits = []
    for index, statement in enumerate(policy["Statement"]):
        if statement["Effect"] != "Allow":
            continue
        if not any(_iam_match(a, action) for a in _as_list(statement["Action"])):
            continue
        if not any(_iam_match(r, resource) for r in _as_list(statement["Resource"])):
            continue
        granted = True
        for operator, keys in statement.get("Condition", {}).items():
            assert operator in {"StringLike", "StringLikeIfExists"}, f"evaluator lacks {operator}"
            for key, patterns in keys.items():
                if key not in context:
                    granted = granted and operator.endswith("IfExists")
                else:
                    granted = granted and any(_iam_match(p, context[key]) for p in _as_list(patterns))
        if granted:
            hits.append(index)
    return hits


def iam_requests(operation: str, params: Mapping[str, Any], needs_not_found: bool) -> list[Request]:
    """The IAM authorizations one S3 API call needs (AWS "Actions, resources, and condition keys for S3").

    `needs_not_found`: the caller tells a missing key (404) from a refusal (403), as the exporter does.
    S3 answers 404 only to a caller allowed s3:ListBucket, checked without a prefix in the context.
    """
    bucket = f"arn:aws:s3:::{params['Bucket']}"
    obj = f"{bucket}/{params.get('Key', '')}"
    not_found_answer: list[Request] = [("s3:ListBucket", bucket, ())] if needs_not_found else []
    table: dict[str, list[Request]] = {
        "PutObject": [("s3:PutObject", obj, ())],
        "CreateMultipartUpload": [("s3:PutObject", obj, ())],
        "UploadPart": [("s3:PutObject", obj, ())],
        "CompleteMultipartUpload": [("s3:PutObject", obj, ())],
        "GetObject": [("s3:GetObject", obj, ()), *not_found_answer],
        "HeadObject": [("s3:GetObject", obj, ()), *not_found_answer],
        "DeleteObject": [("s3:DeleteObject", obj, ())],
        # The storage resource's start-up check (a missing bucket fails before any write).
        "HeadBucket": [("s3:ListBucket", bucket, ())],
    }
    if operation in table:
        return table[operation]
    if operation == "DeleteObjects":
        return [("s3:DeleteObject", f"{bucket}/{item['Key']}", ()) for item in params["Delete"]["Objects"]]
    if operation == "CopyObject":
        source = params["CopySource"]
        return [
            ("s3:GetObject", f"arn:aws:s3:::{source['Bucket']}/{source['Key']}", ()),
            ("s3:PutObject", obj, ()),
        ]
    if operation in {"ListObjectsV2", "ListObjects"}:
        return [("s3:ListBucket", bucket, (("s3:prefix", params.get("Prefix", "")),))]
    raise AssertionError(f"S3 operation {operation} is not mapped to IAM: extend the policy and this table")


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def moto_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


_AUTHORIZATION_PARAMS = ("Bucket", "Key", "Prefix", "CopySource", "Delete")


def _recorder(calls: list[tuple[str, dict[str, Any]]]) -> Any:
    """A botocore hook keeping each call's operation and the parameters IAM authorizes on."""

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        kept = {name: copy.deepcopy(params[name]) for name in _AUTHORIZATION_PARAMS if name in params}
        calls.append((model.name, kept))

    return record


def recording_client(endpoint: str, calls: list[tuple[str, dict[str, Any]]]) -> Any:
    client = moto_client(endpoint)
    client.meta.events.register("provide-client-params.s3.*", _recorder(calls))
    return client


def exporter_s3_calls(vals: Mapping[str, Any], endpoint: str) -> list[tuple[str, dict[str, Any]]]:
    """Every S3 call of a day's publication (first, then re-published in the other format) and of the
    intermediates, through the exporter's own object store and publisher."""
    import pyarrow as pa

    from castai_focus_dagster.storage.keys import DATA_FORMATS, internal_key
    from castai_focus_dagster.storage.object_store import S3ObjectStore
    from castai_focus_dagster.storage.publish import PublishRequest, publish_partition

    settings = load_settings({**env_of(deployment(vals)), "CASTAI_API_KEY": "unused"})
    calls: list[tuple[str, dict[str, Any]]] = []
    client = recording_client(endpoint, calls)
    client.create_bucket(Bucket=settings.s3_bucket)
    calls.clear()
    store = S3ObjectStore(client, settings.s3_bucket)
    day = date(2026, 1, 15)
    ternary = settings.ternary_path_prefix if settings.ternary_enabled else None
    for asset in ("castai_clusters", "castai_workload_costs", "castai_enrichment_context"):
        key = internal_key(settings.s3_prefix, asset, day, "bin")
        store.put(key, b"intermediate", "application/octet-stream")
        store.get(key)
    for fmt in DATA_FORMATS:
        data = f"rows as {fmt}".encode()
        request = PublishRequest(
            day=day,
            organization_id="org-1",
            fmt=fmt,
            data=data,
            row_count=1,
            totals={"BilledCost": 1.0, "EffectiveCost": 1.0, "ListCost": 1.0, "ContractedCost": 1.0},
            source_window=(datetime(2026, 1, 15, tzinfo=UTC), datetime(2026, 1, 16, tzinfo=UTC)),
            step_seconds=3600,
            run_id=f"run-{fmt}",
            complete=True,
            schema_columns=[("BilledCost", pa.decimal128(38, 12))],
            generator_version="test",
        )
        publish_partition(store, request, prefix=settings.s3_prefix, ternary_prefix=ternary)
    return calls


def assert_policy_fits(policy: Mapping[str, Any], requests: list[Request]) -> None:
    """Every request is granted, and every statement, resource and prefix of the policy is needed."""
    denied = [r for r in requests if not matching_statements(policy, r)]
    assert denied == [], f"denied: {denied[:5]}"
    for index, statement in enumerate(policy["Statement"]):
        used = [r for r in requests if index in matching_statements(policy, r)]
        sid = statement.get("Sid", index)
        for action in _as_list(statement["Action"]):
            assert any(r[0] == action for r in used), f"{sid}: {action} is never needed"
        for resource in _as_list(statement["Resource"]):
            assert any(_iam_match(resource, r[1]) for r in used), f"{sid}: {resource} is never needed"
        for keys in statement.get("Condition", {}).values():
            for key, patterns in keys.items():
                for pattern in _as_list(patterns):
                    assert any(_iam_match(pattern, dict(r[2]).get(key, "\0")) for r in used), (
                        f"{sid}: {key} {pattern} is never needed"
                    )


def compute_log_calls(
    vals: Mapping[str, Any], endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, dict[str, Any]]]]:
    """S3 calls of Dagster's S3ComputeLogManager: a run pod uploading step logs, then the webserver
    reading and deleting them (separate local folders, as in separate pods)."""
    from dagster._core.storage.compute_log_manager import ComputeIOType
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    config = vals["computeLogManager"]["config"]["s3ComputeLogManager"]
    moto_client(endpoint).create_bucket(Bucket=config["bucket"])

    def manager(local: str, calls: list[tuple[str, dict[str, Any]]]) -> S3ComputeLogManager:
        instance = S3ComputeLogManager(
            bucket=config["bucket"],
            prefix=config["prefix"],
            local_dir=str(tmp_path / local),
            endpoint_url=endpoint,
        )
        # the manager's own boto3 client
        instance._s3_session.meta.events.register("provide-client-params.s3.*", _recorder(calls))
        return instance

    run_calls: list[tuple[str, dict[str, Any]]] = []
    web_calls: list[tuple[str, dict[str, Any]]] = []
    log_key = ["run-1", "compute_logs", "focus_cost_and_usage"]
    writer = manager("run-pod", run_calls)
    with writer.local_manager.open_log_stream(log_key, ComputeIOType.STDERR) as stream:
        assert stream is not None
        stream.write("step warnings\n")
    with writer.open_log_stream(log_key, ComputeIOType.STDOUT) as stream:  # closing uploads both files
        assert stream is not None
        stream.write("step output\n")
    reader = manager("webserver", web_calls)
    data = reader.get_log_data(log_key)
    assert (data.stdout, data.stderr) == (b"step output\n", b"step warnings\n")
    assert reader.get_log_keys_for_log_key_prefix(log_key[:2], ComputeIOType.STDOUT) == [log_key]
    reader.delete_logs(log_key=log_key)
    reader.delete_logs(prefix=log_key[:1])  # deleting a run from the UI
    return run_calls, web_calls


@pytest.mark.parametrize("value_set", ["staging", "production"])
def test_writer_policy_grants_exactly_what_the_run_pod_does_on_s3(
    values: dict[str, dict[str, Any]],
    value_set: str,
    moto_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vals = helm_merge(values[value_set], {})
    # Ternary on in both, so its statements are exercised whatever the overlay chose.
    deployment(vals)["env"] = [
        {**item, "value": "true"} if item["name"] == "TERNARY_ENABLED" else item
        for item in deployment(vals)["env"]
    ]
    substitutions = iam_substitutions(vals)
    policy = render_policy("s3-writer-policy.json", substitutions)
    run_calls, _ = compute_log_calls(vals, moto_endpoint, tmp_path, monkeypatch)
    requests = [
        r for op, params in exporter_s3_calls(vals, moto_endpoint) for r in iam_requests(op, params, True)
    ]
    # Dagster reads a 403 on a missing log object as "no logs yet", so no 404 rule for those.
    requests += [r for op, params in run_calls for r in iam_requests(op, params, False)]
    assert_policy_fits(policy, requests)

    bucket, prefix = substitutions["BUCKET"], substitutions["PREFIX"]
    outside = [
        ("s3:PutObject", f"arn:aws:s3:::{bucket}/other/{prefix}x", ()),
        ("s3:GetObject", f"arn:aws:s3:::{bucket}-other/{prefix}x", ()),
        (
            "s3:DeleteObject",
            f"arn:aws:s3:::{substitutions['LOGS_BUCKET']}/{substitutions['LOGS_PREFIX']}/x",
            (),
        ),
        ("s3:ListBucket", f"arn:aws:s3:::{bucket}", (("s3:prefix", "other/"),)),
        ("s3:PutBucketPolicy", f"arn:aws:s3:::{bucket}", ()),
    ]
    assert [r for r in outside if matching_statements(policy, r)] == []


def test_compute_logs_reader_policy_fits_the_webserver(
    values: dict[str, dict[str, Any]], moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vals = values["production"]
    policy = render_policy("compute-logs-reader-policy.json", iam_substitutions(vals))
    _, web_calls = compute_log_calls(vals, moto_endpoint, tmp_path, monkeypatch)
    requests = [r for op, params in web_calls for r in iam_requests(op, params, False)]
    assert_policy_fits(policy, requests)
    assert not matching_statements(
        policy, ("s3:PutObject", f"arn:aws:s3:::{requests[0][1].split(':::')[1]}", ())
    )


@pytest.mark.parametrize(
    ("trust_file", "service_account"),
    [
        ("irsa-trust-policy.json", user_deployments_service_account),
        ("compute-logs-reader-trust-policy.json", main_service_account),
    ],
)
@pytest.mark.parametrize("value_set", EKS_SETS)
def test_trust_policies_name_the_service_accounts_of_the_release(
    values: dict[str, dict[str, Any]], value_set: str, trust_file: str, service_account: Any
) -> None:
    vals = values[value_set]
    (statement,) = render_policy(trust_file, iam_substitutions(vals))["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"]["Federated"].endswith(f":oidc-provider/{OIDC_PROVIDER}")
    assert statement["Condition"]["StringEquals"] == {
        f"{OIDC_PROVIDER}:sub": f"system:serviceaccount:{NAMESPACE}:{service_account(vals)}",
        f"{OIDC_PROVIDER}:aud": "sts.amazonaws.com",
    }


def test_ternary_bucket_policy_is_read_only_on_the_ternary_tree(values: dict[str, dict[str, Any]]) -> None:
    from castai_focus_dagster.storage.keys import data_key, manifest_key, ternary_key

    substitutions = iam_substitutions(values["production"])
    policy = render_policy("ternary-bucket-policy.json", substitutions)
    bucket, prefix, ternary = (
        substitutions["BUCKET"],
        substitutions["PREFIX"],
        substitutions["TERNARY_PREFIX"],
    )
    day = date(2026, 1, 15)
    copy_key = ternary_key(ternary, prefix, "org-1", day, "parquet")
    granted = [
        ("s3:GetObject", f"arn:aws:s3:::{bucket}/{copy_key}", ()),
        ("s3:ListBucket", f"arn:aws:s3:::{bucket}", (("s3:prefix", ternary),)),
    ]
    refused = [
        ("s3:GetObject", f"arn:aws:s3:::{bucket}/{data_key(prefix, 'org-1', day, 'parquet')}", ()),
        ("s3:GetObject", f"arn:aws:s3:::{bucket}/{manifest_key(prefix, day)}", ()),
        ("s3:PutObject", f"arn:aws:s3:::{bucket}/{copy_key}", ()),
        ("s3:DeleteObject", f"arn:aws:s3:::{bucket}/{copy_key}", ()),
        ("s3:ListBucket", f"arn:aws:s3:::{bucket}", (("s3:prefix", prefix),)),
    ]
    assert all(matching_statements(policy, r) for r in granted)
    assert [r for r in refused if matching_statements(policy, r)] == []
    principals = {json.dumps(s["Principal"]) for s in policy["Statement"]}
    assert principals == {json.dumps({"AWS": "arn:aws:iam::999988887777:role/ternary-byod-reader"})}


# --------------------------------------------------------------------------------------------------
# The image
# --------------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical, current = [], ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical if text]


def test_dockerfile_installs_the_hashed_lock_before_the_source_and_runs_as_non_root() -> None:
    steps = dockerfile_instructions()
    kinds = [kind for kind, _ in steps]
    args = [arg for _, arg in steps]
    assert args[kinds.index("FROM")] == "${PYTHON_IMAGE}" and "python:3.11-slim" in " ".join(args[:2])
    assert ("WORKDIR", "/opt/dagster/app") in steps
    lock_copy = next(i for i, (k, a) in enumerate(steps) if k == "COPY" and "requirements-prod.lock" in a)
    lock_install = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "--require-hashes" in a)
    source_copy = next(i for i, (k, a) in enumerate(steps) if k == "COPY" and "castai_focus_dagster" in a)
    project_install = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "--no-deps" in a)
    assert lock_copy < lock_install < source_copy < project_install
    users = [arg for kind, arg in steps if kind == "USER"]
    assert users and users[-1].split(":")[0] == "10001", "numeric non-root user, last USER wins"
    assert "ENTRYPOINT" not in kinds, "the chart and the run launcher pass the full command as args"
    cmd = json.loads(args[kinds.index("CMD")])
    assert cmd[:3] == ["dagster", "code-server", "start"] and cmd[-2:] == [
        "-m",
        "castai_focus_dagster.definitions",
    ]
    assert ("EXPOSE", "3030") in steps


def test_dockerfile_bakes_in_no_instance_config_and_no_secret() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    copied = " ".join(arg for kind, arg in dockerfile_instructions() if kind in {"COPY", "ADD"})
    assert "dagster.yaml" not in copied and "workspace.yaml" not in copied
    env_names = re.findall(
        r"\b([A-Z][A-Z0-9_]*)=", " ".join(a for k, a in dockerfile_instructions() if k in {"ENV", "ARG"})
    )
    assert not [n for n in env_names if re.search(r"KEY|SECRET|TOKEN|PASSWORD", n) or n in SETTING_NAMES]
    assert "CASTAI_API_KEY" not in text and "AWS_SECRET" not in text


def test_dockerignore_admits_only_what_the_image_copies() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    sources = {
        token.rstrip("/")
        for kind, arg in dockerfile_instructions()
        if kind == "COPY"
        for token in arg.split()[:-1]
        if not token.startswith("--")
    }
    assert admitted == sources
    assert [source for source in sources if not (REPO / source).exists()] == []
    pyproject = (REPO / "pyproject.toml").read_text()
    readme = re.search(r'^readme\s*=\s*"([^"]+)"', pyproject, re.M)
    assert readme is None or readme.group(1) in sources, "the build needs the readme pyproject names"


def load_prod_lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("prod_lock", DEPLOY / "prod_lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def test_prod_lock_is_the_current_runtime_subset_of_the_project_lock() -> None:
    prod_lock = load_prod_lock_module()
    expected = prod_lock.render_prod_lock(
        (REPO / "requirements.lock").read_text(), (REPO / "pyproject.toml").read_text()
    )
    assert (DEPLOY / "requirements-prod.lock").read_text() == expected, "run `python deploy/prod_lock.py`"
    full = prod_lock.parse_lock((REPO / "requirements.lock").read_text())
    subset = prod_lock.parse_lock(expected)
    assert all(full[name] == entry for name, entry in subset.items()), (
        "same pins and hashes as the tested lock"
    )
    dev_only = {"pytest", "moto", "mypy", "ruff", "hypothesis", "duckdb", "dagster-webserver"}
    assert not dev_only & subset.keys()


def test_prod_lock_closes_over_the_installed_runtime_requirements() -> None:
    """Independent of uv's annotations: walk the installed distributions' metadata from pyproject."""
    import importlib.metadata
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    prod_lock = load_prod_lock_module()
    locked = set(prod_lock.parse_lock((DEPLOY / "requirements-prod.lock").read_text()))
    roots = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    todo = [Requirement(r) for r in roots]
    needed: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement = todo.pop()
        name, extras = canonicalize_name(requirement.name), frozenset(requirement.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        needed.add(name)
        for spec in importlib.metadata.distribution(name).requires or []:
            child = Requirement(spec)
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in extras | {""}):
                todo.append(child)
    assert needed - locked == set()


def test_every_package_import_is_satisfied_by_the_image_lock() -> None:
    import ast
    import importlib.metadata

    from packaging.utils import canonicalize_name

    prod_lock = load_prod_lock_module()
    locked = set(prod_lock.parse_lock((DEPLOY / "requirements-prod.lock").read_text()))
    providers = importlib.metadata.packages_distributions()
    top_level: set[str] = set()
    for path in (REPO / "castai_focus_dagster").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                top_level |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                top_level.add(node.module.split(".")[0])
    third_party = top_level - set(sys.stdlib_module_names) - {"castai_focus_dagster", "__future__"}
    # Type-checking-only stub packages are not runtime imports.
    third_party -= {name for name in third_party if name.startswith("mypy_boto3")}
    unsatisfied = {
        module
        for module in third_party
        if not {canonicalize_name(d) for d in providers.get(module, [])} & locked
    }
    assert unsatisfied == set()


# --------------------------------------------------------------------------------------------------
# Local evaluation and the repo-root instance
# --------------------------------------------------------------------------------------------------


def test_minio_bucket_job_creates_the_bucket_idempotently(moto_endpoint: str) -> None:
    """The bucket Job's script, run as the Job runs it (python -c) against S3 on 127.0.0.1."""
    documents = load_yaml_documents(DEPLOY / "k8s" / "minio.yaml")
    job = next(d for d in documents if d["kind"] == "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    secret = next(
        d for d in documents if d["kind"] == "Secret" and d["metadata"]["name"] == "minio-credentials"
    )
    env = {item["name"]: item["value"] for item in container["env"]}
    bucket = env["S3_BUCKET"]
    assert bucket == env_of(deployment(user_values("local")))["S3_BUCKET"]
    run_env = {**secret["stringData"], **env, "S3_ENDPOINT_URL": moto_endpoint, "PATH": "/usr/bin:/bin"}
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, *container["command"][1:], *container["args"]],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    client = moto_client(moto_endpoint)
    assert bucket in {b["Name"] for b in client.list_buckets()["Buckets"]}
    assert container["image"] == "{repository}:{tag}".format(**deployment(user_values("local"))["image"])


def test_repo_root_dagster_yaml_loads_as_an_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster import DagsterInstance

    root_config = REPO / "dagster.yaml"
    if not root_config.exists():
        pytest.skip("no repo-root dagster.yaml yet (the local-development instance)")
    (tmp_path / "dagster.yaml").write_text(root_config.read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_coordinator is not None
        concurrency = instance.get_concurrency_config()
        limits = concurrency.run_queue_config.tag_concurrency_limits  # type: ignore[union-attr]
        assert PER_DAY_LIMIT in limits
        (backfill,) = [limit["limit"] for limit in limits if limit["key"] == "dagster/backfill"]
        assert concurrency.pool_config.pool_granularity is not None
        assert concurrency.pool_config.pool_granularity.value == "op"
        assert backfill <= (concurrency.pool_config.default_pool_limit or 0)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_the_export_runs_from_the_first_deployment_as_the_cronjob_did(
    values: dict[str, dict[str, Any]], value_set: str
) -> None:
    """Schedule and sensor start running; output only to S3 (no local fallback); the original defaults."""
    env = env_of(deployment(values[value_set]))
    assert env["SCHEDULE_DEFAULT_STATUS"] == "running"
    assert env["LOCAL_OUTPUT_DIR"] == "" and env["S3_BUCKET"] and env["S3_REGION"]
    assert env["S3_PREFIX"] == "focus/" and env["FOCUS_PUBLISHER_NAME"] == "Cast AI"
    assert env["JOB_BACKFILL_DAYS"] == "0" and env["SCHEDULE_CRON"] == "0 */6 * * *"
    assert env["DELETE_LEGACY_HOURLY_OBJECTS"] == "false"  # an operator's choice, never the default
    assert env["LOG_LEVEL"] in LOG_LEVELS


def kubernetes_expand(arg: str, env: Mapping[str, str]) -> str:
    """`$(VAR)` in a container's args as Kubernetes expands it (an undefined name stays as written)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), arg)


@pytest.mark.parametrize("value_set", VALUE_SETS)
@pytest.mark.parametrize("log_level", sorted(LOG_LEVELS))
def test_the_code_server_command_line_starts_with_every_log_level(
    values: dict[str, dict[str, Any]], value_set: str, log_level: str
) -> None:
    """Regression: `--log-level $(LOG_LEVEL)` crash-looped the pod on the original's `warn`.

    The chart runs `dagster code-server start -h 0.0.0.0 -p PORT <codeServerArgs>`; each LOG_LEVEL the
    settings accept must give a command line dagster's own CLI parses, and LOG_LEVEL is applied inside
    the process instead.
    """
    from dagster._cli.code_server import start_command

    entry = deployment(values[value_set])
    env = {**env_of(entry), "LOG_LEVEL": log_level}
    args = [
        "-h",
        "0.0.0.0",
        "-p",
        str(entry["port"]),
        *(kubernetes_expand(a, env) for a in entry["codeServerArgs"]),
    ]
    with start_command.make_context("start", args) as context:  # click's own parsing, no server started
        assert context.params["module_name"] == "castai_focus_dagster.definitions"
