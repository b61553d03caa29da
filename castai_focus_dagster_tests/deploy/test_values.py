"""The Helm values (deploy/helm) against the chart's JSON schemas and the Kubernetes models: fields,
resources, run monitoring, exporter settings and secrets."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from castai_focus_dagster.defs.k8s import FOCUS_JOB_K8S_CONFIG
from castai_focus_dagster.settings import load_settings
from castai_focus_dagster_tests.deploy.helm import (
    CHART_RUN_MONITORING_KEYS,
    DEPLOY,
    EKS_SETS,
    OVERLAYS,
    SECRET_SETTINGS,
    SETTING_NAMES,
    VALUE_SETS,
    deployment,
    env_of,
    load_yaml_documents,
    schema_errors,
    secret_manifests,
    user_values,
)

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
