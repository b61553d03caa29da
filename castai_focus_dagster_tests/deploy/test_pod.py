"""The instance the chart renders, checked by Dagster's own validation; the run pod, built by dagster-k8s
as K8sRunLauncher builds it; the code server's command line."""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from castai_focus_dagster.defs.k8s import FOCUS_JOB_K8S_CONFIG
from castai_focus_dagster.settings import LOG_LEVELS
from castai_focus_dagster_tests.deploy.helm import (
    EKS_SETS,
    NAMESPACE,
    PER_DAY_LIMIT,
    SECRET_SETTINGS,
    SUBCHART_NAME,
    VALUE_SETS,
    _camel_to_snake,
    chart_instance,
    deployment,
    env_of,
    fullname,
    merge_patch,
    user_deployments_service_account,
)


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
    assert container["resources"] == merge_patch(defaults, deployment(vals)["resources"])
    tagged = FOCUS_JOB_K8S_CONFIG["container_config"]["resources"]
    assert container["resources"]["limits"]["memory"] == tagged["limits"]["memory"]
    if value_set in EKS_SETS:
        assert container["resources"]["requests"]["memory"] == tagged["requests"]["memory"]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == user_deployments_service_account(vals)


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
