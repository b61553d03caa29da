"""Configuration: every original variable with its default, one error listing all problems, no leaks."""

from __future__ import annotations

import logging

import pytest

from castai_focus_dagster.settings import (
    SANDBOX_ORGANIZATION_ID,
    SETTINGS_DOC,
    ConfigError,
    Settings,
    cron_problem,
    key_allowed_over,
    load_settings,
    schedule_cron,
)

# The variables of the original castai-focus README (issue 2), each must exist with its documented default.
ORIGINAL_VARIABLES = [
    "CASTAI_API_URL",
    "CASTAI_API_KEY",
    "CASTAI_ORGANIZATION_ID",
    "COLLECTION_LOOKBACK_HOURS",
    "COLLECTION_GRANULARITY",
    "COLLECTION_INCLUDE_CLUSTER_IDS",
    "COLLECTION_EXCLUDE_CLUSTER_IDS",
    "COLLECTION_INCLUDE_NAMESPACES",
    "COLLECTION_EXCLUDE_NAMESPACES",
    "FOCUS_BILLING_CURRENCY",
    "FOCUS_SERVICE_PROVIDER_NAME",
    "FOCUS_INVOICE_ISSUER_NAME",
    "FOCUS_PUBLISHER_NAME",
    "FOCUS_BILLING_ACCOUNT_NAME",
    "FOCUS_TAG_ALLOWLIST",
    "FOCUS_ENTERPRISE_ID",
    "S3_BUCKET",
    "S3_REGION",
    "S3_PREFIX",
    "S3_FORMAT",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
    "TERNARY_ENABLED",
    "TERNARY_PATH_PREFIX",
    "JOB_BACKFILL_DAYS",
    "LOG_LEVEL",
]
# The defaults of the original README's tables (shared seed), written out here: the code must match them.
ORIGINAL_DEFAULTS = {
    "CASTAI_API_URL": "https://api.cast.ai",
    "COLLECTION_LOOKBACK_HOURS": "24",
    "COLLECTION_GRANULARITY": "hourly",
    "FOCUS_BILLING_CURRENCY": "USD",
    "FOCUS_SERVICE_PROVIDER_NAME": "CAST AI",
    "FOCUS_INVOICE_ISSUER_NAME": "CAST AI",
    "FOCUS_PUBLISHER_NAME": "Cast AI",
    "FOCUS_TAG_ALLOWLIST": "",
    "S3_PREFIX": "focus/",
    "S3_FORMAT": "parquet",
    "TERNARY_ENABLED": "false",
    "TERNARY_PATH_PREFIX": "ternary/",
    "JOB_BACKFILL_DAYS": "0",
    "LOG_LEVEL": "info",
}
PRODUCTION = {
    "CASTAI_API_URL": "https://api.eu.cast.ai",
    "CASTAI_API_KEY": "ck-live-7f3a9b1e2d",
    "CASTAI_ORGANIZATION_ID": "0b9a2f00-1111-4c2a-9d7e-2b3c4d5e6f70",
    "S3_BUCKET": "finops-costs",
    "S3_REGION": "eu-west-1",
}
SECRET_KEY = "ck-live-7f3a9b1e2d"
SECRET_S3 = "s3-secret-Zx81QmP"


def problems_of(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    return info.value.problems


def test_every_original_variable_is_documented_with_its_origin() -> None:
    documented = {d.env: d for d in SETTINGS_DOC}
    for name in ORIGINAL_VARIABLES:
        assert name in documented, name
        assert documented[name].origin == "original"
    added = {d.env for d in SETTINGS_DOC if d.origin == "added"}
    assert {"LOCAL_OUTPUT_DIR", "S3_ENDPOINT_URL", "JOB_GAP_FILL_DAYS", "SCHEDULE_DEFAULT_STATUS"} <= added
    assert set(ORIGINAL_VARIABLES) | added == set(documented)


def test_original_defaults_are_kept() -> None:
    documented = {d.env: d.default for d in SETTINGS_DOC}
    assert {name: documented[name] for name in ORIGINAL_DEFAULTS} == ORIGINAL_DEFAULTS
    settings = load_settings(PRODUCTION)
    assert settings.s3_prefix == "focus/" and settings.focus_publisher_name == "Cast AI"
    assert settings.job_backfill_days == 0 and settings.log_level == "info"
    assert settings.schedule_default_status == "stopped" and settings.job_gap_fill_days == 7
    assert settings.delete_legacy_hourly_objects is False


def test_s3_bucket_and_region_are_required_against_the_real_api() -> None:
    no_s3 = {k: v for k, v in PRODUCTION.items() if not k.startswith("S3_")}
    problems = problems_of(no_s3 | {"COLLECTION_GRANULARITY": "weekly"})
    assert [p.split(":")[0] for p in problems] == ["COLLECTION_GRANULARITY", "S3_BUCKET", "S3_REGION"]
    assert problems_of(no_s3 | {"S3_BUCKET": "b"}) == [
        "S3_REGION: required with S3_BUCKET against the real Cast AI API"
    ]
    # An explicit LOCAL_OUTPUT_DIR is the one way to write locally against the real API.
    local = load_settings(no_s3 | {"LOCAL_OUTPUT_DIR": "/var/lib/focus"})
    assert not local.uses_s3 and local.local_output_dir == "/var/lib/focus"
    # A blank LOCAL_OUTPUT_DIR (Helm lists every variable) is not an explicit choice.
    assert problems_of(no_s3 | {"LOCAL_OUTPUT_DIR": " "})[0].startswith("S3_BUCKET:")
    assert load_settings({"CASTAI_API_URL": "sandbox", "LOCAL_OUTPUT_DIR": ""}).local_output_dir == "./data"
    # The sandbox writes locally by default, and to S3 without a region (the AWS default chain).
    assert not load_settings({"CASTAI_API_URL": "sandbox"}).uses_s3
    assert load_settings({"CASTAI_API_URL": "sandbox", "S3_BUCKET": "b"}).s3_region == ""


def test_apply_log_level_silences_every_python_logger_below_it(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    from castai_focus_dagster.logs import PYTHON_LOGGERS, apply_log_level

    saved = {name: logging.getLogger(name).level for name in PYTHON_LOGGERS}
    request.addfinalizer(lambda: [logging.getLogger(n).setLevel(level) for n, level in saved.items()])

    def fresh() -> logging.Logger:  # as Dagster builds its console logger, anew for every run
        return logging.Logger("dagster", level=logging.DEBUG)

    monkeypatch.setenv("LOG_LEVEL", "error")
    assert apply_log_level() == logging.ERROR
    assert not fresh().isEnabledFor(logging.WARNING) and fresh().isEnabledFor(logging.ERROR)
    monkeypatch.setenv("LOG_LEVEL", "verbose")  # unknown: info here; the settings check reports it
    assert apply_log_level() == logging.INFO
    assert fresh().isEnabledFor(logging.INFO) and not fresh().isEnabledFor(logging.DEBUG)
    assert logging.getLogger("castai_focus_dagster").level == logging.INFO
    monkeypatch.setenv("LOG_LEVEL", "debug")
    assert apply_log_level() == logging.DEBUG and fresh().isEnabledFor(logging.DEBUG)


def test_log_levels_map_to_logging_levels() -> None:
    levels = {
        name: load_settings({"CASTAI_API_URL": "sandbox", "LOG_LEVEL": name}).python_log_level
        for name in ("debug", "INFO", "warn", "warning", "Error")
    }
    assert levels == {
        "debug": logging.DEBUG,
        "INFO": logging.INFO,
        "warn": logging.WARNING,
        "warning": logging.WARNING,
        "Error": logging.ERROR,
    }


@pytest.mark.parametrize("doc", SETTINGS_DOC, ids=lambda d: d.env)
def test_each_variable_is_accepted_and_its_documented_default_applies(doc) -> None:  # type: ignore[no-untyped-def]
    defaults = load_settings({"CASTAI_API_URL": "sandbox"})
    field = doc.env.lower()
    value = getattr(defaults, field)
    shown = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    if doc.env == "CASTAI_API_URL":
        without_url = {k: v for k, v in PRODUCTION.items() if k != "CASTAI_API_URL"}
        assert load_settings(without_url).castai_api_url == doc.default
        return
    if isinstance(shown, tuple):
        assert shown == tuple(p for p in doc.default.split(",") if p)
    elif isinstance(shown, bool):
        assert shown is (doc.default == "true")
    elif isinstance(shown, (int, float)):
        assert shown == type(shown)(doc.default)
    else:
        assert shown == doc.default
    # ...and an explicit value of the documented default is accepted as well.
    load_settings(
        {"CASTAI_API_URL": "sandbox", doc.env: doc.default} if doc.default else {"CASTAI_API_URL": "sandbox"}
    )


def test_defaults_need_nothing_in_sandbox_mode() -> None:
    settings = load_settings({"CASTAI_API_URL": "sandbox"})
    assert settings.is_sandbox and not settings.uses_s3
    assert settings.organization_id == SANDBOX_ORGANIZATION_ID
    assert settings.local_output_dir == "./data"
    assert settings.step_seconds == 3600


def test_production_settings_parse_lists_and_flags() -> None:
    settings = load_settings(
        PRODUCTION
        | {
            "COLLECTION_INCLUDE_CLUSTER_IDS": " a , b,,c ",
            "FOCUS_TAG_ALLOWLIST": "team,app.kubernetes.io/name",
            "COLLECTION_GRANULARITY": "DAILY",
            "S3_BUCKET": "finops",
            "S3_PREFIX": "/castai",
            "TERNARY_ENABLED": "true",
        }
    )
    assert settings.collection_include_cluster_ids == ("a", "b", "c")
    assert settings.focus_tag_allowlist == ("team", "app.kubernetes.io/name")
    assert settings.step_seconds == 86400
    assert settings.s3_prefix == "castai/"
    assert settings.ternary_enabled and settings.uses_s3


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"COLLECTION_GRANULARITY": "weekly"}, "COLLECTION_GRANULARITY"),
        ({"S3_FORMAT": "json"}, "S3_FORMAT"),
        ({"FOCUS_BILLING_CURRENCY": "usd"}, "FOCUS_BILLING_CURRENCY"),
        ({"FOCUS_BILLING_CURRENCY": "XAU"}, "FOCUS_BILLING_CURRENCY"),
        ({"COLLECTION_LOOKBACK_HOURS": "two"}, "COLLECTION_LOOKBACK_HOURS"),
        ({"JOB_BACKFILL_DAYS": "-1"}, "JOB_BACKFILL_DAYS"),
        ({"CASTAI_MAX_CONCURRENCY": "0"}, "CASTAI_MAX_CONCURRENCY"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL"),
        ({"JOB_GAP_FILL_DAYS": "-3"}, "JOB_GAP_FILL_DAYS"),
        ({"SCHEDULE_DEFAULT_STATUS": "paused"}, "SCHEDULE_DEFAULT_STATUS"),
        ({"DELETE_LEGACY_HOURLY_OBJECTS": "perhaps"}, "DELETE_LEGACY_HOURLY_OBJECTS"),
        ({"FOCUS_ALLOCATION_MODE": "namespace"}, "FOCUS_ALLOCATION_MODE"),
        ({"TERNARY_ENABLED": "maybe"}, "TERNARY_ENABLED"),
        (
            {"COLLECTION_INCLUDE_CLUSTER_IDS": "a", "COLLECTION_EXCLUDE_CLUSTER_IDS": "b"},
            "COLLECTION_INCLUDE_CLUSTER_IDS and COLLECTION_EXCLUDE_CLUSTER_IDS",
        ),
        (
            {"COLLECTION_INCLUDE_NAMESPACES": "a", "COLLECTION_EXCLUDE_NAMESPACES": "b"},
            "COLLECTION_INCLUDE_NAMESPACES and COLLECTION_EXCLUDE_NAMESPACES",
        ),
        ({"S3_ACCESS_KEY_ID": "AKIAEXAMPLE"}, "S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY"),
        ({"S3_ENDPOINT_URL": "minio:9000"}, "S3_ENDPOINT_URL"),
        ({"TERNARY_ENABLED": "true", "TERNARY_PATH_PREFIX": ""}, "TERNARY_PATH_PREFIX"),
    ],
)
def test_each_validation_rule(env: dict[str, str], expected: str) -> None:
    problems = problems_of({"CASTAI_API_URL": "sandbox"} | env)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected)


def test_required_values_outside_sandbox() -> None:
    problems = problems_of({"CASTAI_API_URL": "https://api.cast.ai"})
    assert any(p.startswith("CASTAI_API_KEY") for p in problems)
    assert any(p.startswith("CASTAI_ORGANIZATION_ID") for p in problems)
    load_settings(PRODUCTION)  # complete production settings load


def test_plain_http_only_to_loopback() -> None:
    problems = problems_of(PRODUCTION | {"CASTAI_API_URL": "http://api.cast.ai"})
    assert problems == [
        "CASTAI_API_URL: plain http is allowed only to a loopback host (the API key would travel unencrypted)"
    ]
    load_settings(PRODUCTION | {"CASTAI_API_URL": "http://127.0.0.1:8080"})
    assert key_allowed_over("http://localhost:1") and key_allowed_over("http://[::1]:1")
    assert not key_allowed_over("http://10.0.0.1") and key_allowed_over("https://api.cast.ai")


def test_one_error_lists_every_problem() -> None:
    env = {
        "CASTAI_API_URL": "https://api.cast.ai",
        "COLLECTION_GRANULARITY": "weekly",
        "S3_FORMAT": "xml",
        "FOCUS_BILLING_CURRENCY": "dollars",
        "JOB_BACKFILL_DAYS": "many",
        "COLLECTION_INCLUDE_NAMESPACES": "a",
        "COLLECTION_EXCLUDE_NAMESPACES": "b",
    }
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    message = str(info.value)
    for name in (
        "COLLECTION_GRANULARITY",
        "S3_FORMAT",
        "FOCUS_BILLING_CURRENCY",
        "JOB_BACKFILL_DAYS",
        "COLLECTION_INCLUDE_NAMESPACES",
        "CASTAI_API_KEY",
        "CASTAI_ORGANIZATION_ID",
        "S3_BUCKET",
        "S3_REGION",
    ):
        assert name in message
    assert message.startswith("invalid configuration (9 problem(s))")


def test_secrets_never_appear_in_repr_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(
        PRODUCTION | {"S3_ACCESS_KEY_ID": "AKIAEXAMPLE", "S3_SECRET_ACCESS_KEY": SECRET_S3}
    )
    assert settings.castai_api_key.get_secret_value() == SECRET_KEY
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("castai_focus_dagster").info("settings: %s / %r", settings, settings)
    for text in (repr(settings), str(settings), settings.model_dump_json(), caplog.text):
        assert SECRET_KEY not in text and SECRET_S3 not in text
    # A broken configuration that carries secrets must not echo them either.
    bad = PRODUCTION | {"S3_SECRET_ACCESS_KEY": SECRET_S3, "COLLECTION_GRANULARITY": SECRET_KEY}
    with pytest.raises(ConfigError) as info:
        load_settings(bad)
    assert SECRET_KEY not in str(info.value) and SECRET_S3 not in str(info.value)
    assert SECRET_KEY not in repr(info.value)


def test_settings_are_immutable() -> None:
    settings = load_settings({"CASTAI_API_URL": "sandbox"})
    with pytest.raises(ValueError):
        settings.s3_bucket = "x"  # type: ignore[misc]
    assert isinstance(settings, Settings)


@pytest.mark.parametrize("around", [("", "\n"), ("", "\r\n"), ("  ", " \t\n"), ("\n", "")])
def test_secrets_lose_surrounding_whitespace_when_settings_load(around: tuple[str, str]) -> None:
    """`kubectl create secret --from-file` keeps a file's final newline in the secret."""
    before, after = around
    settings = load_settings(
        PRODUCTION
        | {
            "CASTAI_API_KEY": before + SECRET_KEY + after,
            "S3_ACCESS_KEY_ID": before + "AKIAEXAMPLE" + after,  # regression: was kept with its newline
            "S3_SECRET_ACCESS_KEY": before + SECRET_S3 + after,
        }
    )
    assert settings.castai_api_key.get_secret_value() == SECRET_KEY
    assert settings.s3_access_key_id == "AKIAEXAMPLE"
    assert settings.s3_secret_access_key.get_secret_value() == SECRET_S3


@pytest.mark.parametrize("inside", ["\n", "\r\n", "\x00", "\x07", "\x1b", "\x7f", "é", "\u2028"])
def test_a_secret_with_a_control_character_inside_is_refused_without_showing_it(inside: str) -> None:
    key, secret = SECRET_KEY[:5] + inside + SECRET_KEY[5:], SECRET_S3[:4] + inside + SECRET_S3[4:]
    problems = problems_of(
        PRODUCTION
        | {"CASTAI_API_KEY": key, "S3_ACCESS_KEY_ID": "AKIAEXAMPLE", "S3_SECRET_ACCESS_KEY": secret}
    )
    assert [p.split(":")[0] for p in problems] == ["CASTAI_API_KEY", "S3_SECRET_ACCESS_KEY"]
    assert all("control or non-ASCII character" in p for p in problems)
    text = "\n".join(problems)
    for part in (SECRET_KEY[:5], SECRET_KEY[5:], SECRET_S3[:4], SECRET_S3[4:]):
        assert part not in text


@pytest.mark.parametrize("inside", ["\n", "\x00", "é"])
def test_an_access_key_id_with_a_control_character_inside_is_refused(inside: str) -> None:
    problems = problems_of(
        PRODUCTION | {"S3_ACCESS_KEY_ID": "AKIA" + inside + "EXAMPLE", "S3_SECRET_ACCESS_KEY": SECRET_S3}
    )
    assert [p.split(":")[0] for p in problems] == ["S3_ACCESS_KEY_ID"]
    assert "control or non-ASCII character" in problems[0]


@pytest.mark.parametrize(
    "cron", ["@daily", "@hourly", "@weekly", "@monthly", "0 */6 * * *", " 15 3 * * mon "]
)
def test_every_cron_the_schedule_accepts_loads_at_start_and_in_the_schedule(cron: str) -> None:
    settings = load_settings({"CASTAI_API_URL": "sandbox", "SCHEDULE_CRON": cron})
    assert settings.schedule_cron == cron.strip() == schedule_cron({"SCHEDULE_CRON": cron})
    assert cron_problem(cron.strip()) is None


@pytest.mark.parametrize("cron", ["@reboot", "@every 5m", "0 0 31 2 *", "* * * * * *", "61 * * * *", "daily"])
def test_a_cron_the_schedule_refuses_is_refused_at_start_and_at_load_alike(cron: str) -> None:
    problems = problems_of({"CASTAI_API_URL": "sandbox", "SCHEDULE_CRON": cron})
    with pytest.raises(ConfigError) as at_load:
        schedule_cron({"SCHEDULE_CRON": cron})
    assert problems == at_load.value.problems
    assert (
        problems[0].startswith("SCHEDULE_CRON: not a cron schedule Dagster accepts")
        and repr(cron) in problems[0]
    )


@pytest.mark.parametrize(
    "cron",
    [
        "@daily",
        "@hourly",
        "@weekly",
        "@monthly",
        "@yearly",
        "@reboot",
        "@every 5m",
        "0 0 31 2 *",
        "0 0 29 2 *",
        "* * * * * *",
        "61 * * * *",
        "daily",
        "0 */6 * * *",
        "15 3 * * mon",
        "0 0 L * *",
        "0 0 1-31/2 * *",
        "0 0 * * 7",
        "0 0 ? * *",
        "*/0 * * * *",
        "0 0 1 jan-mar *",
    ],
)
def test_settings_accept_a_cron_exactly_when_dagster_s_schedule_does(cron: str) -> None:
    import dagster as dg

    try:
        dg.ScheduleDefinition(name="s", cron_schedule=cron, job_name="j", execution_timezone="UTC")
        dagster_accepts = True
    except dg.DagsterInvalidDefinitionError:
        dagster_accepts = False
    assert (cron_problem(cron) is None) == dagster_accepts
