"""IAM (deploy/iam): the policies allow every S3 call the exporter and Dagster make, and nothing else."""

from __future__ import annotations

import copy
import fnmatch
import json
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from castai_focus_dagster.settings import load_settings
from castai_focus_dagster_tests.deploy.helm import (
    DEPLOY,
    EKS_SETS,
    NAMESPACE,
    deployment,
    env_of,
    main_service_account,
    moto_client,
    user_deployments_service_account,
)

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
    from castai_focus_dagster.storage.keys import DATA_FORMATS, internal_key
    from castai_focus_dagster.storage.object_store import S3ObjectStore
    from castai_focus_dagster.storage.publish import publish_partition
    from castai_focus_dagster.storage.publish_model import PublishRequest

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
    vals = copy.deepcopy(values[value_set])
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
