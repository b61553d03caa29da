"""The configuration corpus: every invalid setting, alone or combined, gives one message listing all problems.

Each `Invalid` names the variables its problem must be reported under. Single cases must produce exactly
their problems; any two cases that touch different variables must produce exactly the union, in one
`ConfigError`; all of them at once too. A run started with a broken configuration fails with that same
message, and never echoes a secret.
"""

from __future__ import annotations

import importlib
import itertools
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from castai_focus_dagster.settings import ConfigError, load_settings
from castai_focus_dagster_tests.reliability.harness import exporter_environment, run_day

API_KEY = "castai-key-CONFIG-CORPUS-4f1e"
S3_SECRET = "s3-secret-CONFIG-CORPUS-9a7c"
VALID = {
    "CASTAI_API_URL": "https://api.cast.ai",
    "CASTAI_API_KEY": API_KEY,
    "CASTAI_ORGANIZATION_ID": "7e5b3c1a-0000-4000-8000-00000000c0de",
    "S3_BUCKET": "finops-costs",
    "S3_REGION": "eu-west-1",
}


@dataclass(frozen=True)
class Invalid:
    id: str
    env: dict[str, str]
    reported_as: tuple[str, ...]  # each problem line starts with one of these (one line per entry)


CORPUS = (
    Invalid("api-url-not-a-url", {"CASTAI_API_URL": "api.cast.ai"}, ("CASTAI_API_URL",)),
    Invalid("api-url-plain-http-remote", {"CASTAI_API_URL": "http://api.cast.ai"}, ("CASTAI_API_URL",)),
    Invalid("api-key-missing", {"CASTAI_API_KEY": ""}, ("CASTAI_API_KEY",)),
    Invalid("organization-missing", {"CASTAI_ORGANIZATION_ID": ""}, ("CASTAI_ORGANIZATION_ID",)),
    Invalid("granularity-unknown", {"COLLECTION_GRANULARITY": "weekly"}, ("COLLECTION_GRANULARITY",)),
    Invalid("lookback-not-a-number", {"COLLECTION_LOOKBACK_HOURS": "two"}, ("COLLECTION_LOOKBACK_HOURS",)),
    Invalid("lookback-negative", {"COLLECTION_LOOKBACK_HOURS": "-5"}, ("COLLECTION_LOOKBACK_HOURS",)),
    Invalid(
        "cluster-include-and-exclude",
        {"COLLECTION_INCLUDE_CLUSTER_IDS": "a", "COLLECTION_EXCLUDE_CLUSTER_IDS": "b"},
        ("COLLECTION_INCLUDE_CLUSTER_IDS and COLLECTION_EXCLUDE_CLUSTER_IDS",),
    ),
    Invalid(
        "namespace-include-and-exclude",
        {"COLLECTION_INCLUDE_NAMESPACES": "a", "COLLECTION_EXCLUDE_NAMESPACES": "b"},
        ("COLLECTION_INCLUDE_NAMESPACES and COLLECTION_EXCLUDE_NAMESPACES",),
    ),
    Invalid("currency-lower-case", {"FOCUS_BILLING_CURRENCY": "usd"}, ("FOCUS_BILLING_CURRENCY",)),
    Invalid("currency-not-national", {"FOCUS_BILLING_CURRENCY": "XAU"}, ("FOCUS_BILLING_CURRENCY",)),
    Invalid("provider-name-empty", {"FOCUS_SERVICE_PROVIDER_NAME": ""}, ("FOCUS_SERVICE_PROVIDER_NAME",)),
    Invalid("publisher-name-empty", {"FOCUS_PUBLISHER_NAME": ""}, ("FOCUS_PUBLISHER_NAME",)),
    Invalid("service-name-empty", {"FOCUS_SERVICE_NAME": ""}, ("FOCUS_SERVICE_NAME",)),
    Invalid("allocation-mode-unknown", {"FOCUS_ALLOCATION_MODE": "namespace"}, ("FOCUS_ALLOCATION_MODE",)),
    Invalid("format-unknown", {"S3_FORMAT": "json"}, ("S3_FORMAT",)),
    Invalid(
        "s3-key-without-secret",
        {"S3_ACCESS_KEY_ID": "AKIAEXAMPLE"},
        ("S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY",),
    ),
    Invalid(
        "s3-secret-without-key",
        {"S3_SECRET_ACCESS_KEY": S3_SECRET},
        ("S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY",),
    ),
    Invalid("s3-endpoint-not-a-url", {"S3_ENDPOINT_URL": "minio:9000"}, ("S3_ENDPOINT_URL",)),
    Invalid("ternary-flag-unreadable", {"TERNARY_ENABLED": "maybe"}, ("TERNARY_ENABLED",)),
    Invalid(
        "ternary-without-prefix",
        {"TERNARY_ENABLED": "true", "TERNARY_PATH_PREFIX": ""},
        ("TERNARY_PATH_PREFIX",),
    ),
    Invalid("backfill-days-negative", {"JOB_BACKFILL_DAYS": "-1"}, ("JOB_BACKFILL_DAYS",)),
    Invalid("log-level-unknown", {"LOG_LEVEL": "verbose"}, ("LOG_LEVEL",)),
    Invalid("s3-bucket-missing-against-the-real-api", {"S3_BUCKET": ""}, ("S3_BUCKET",)),
    Invalid("s3-region-missing-against-the-real-api", {"S3_REGION": ""}, ("S3_REGION",)),
    Invalid("gap-fill-days-negative", {"JOB_GAP_FILL_DAYS": "-1"}, ("JOB_GAP_FILL_DAYS",)),
    Invalid("schedule-status-unknown", {"SCHEDULE_DEFAULT_STATUS": "on"}, ("SCHEDULE_DEFAULT_STATUS",)),
    Invalid(
        "legacy-hourly-flag-unreadable",
        {"DELETE_LEGACY_HOURLY_OBJECTS": "maybe"},
        ("DELETE_LEGACY_HOURLY_OBJECTS",),
    ),
    Invalid("concurrency-zero", {"CASTAI_MAX_CONCURRENCY": "0"}, ("CASTAI_MAX_CONCURRENCY",)),
    Invalid("rate-limit-zero", {"CASTAI_RATE_LIMIT_RPS": "0"}, ("CASTAI_RATE_LIMIT_RPS",)),
    Invalid("timeout-negative", {"CASTAI_TIMEOUT_SECONDS": "-1"}, ("CASTAI_TIMEOUT_SECONDS",)),
    Invalid("retries-absurd", {"CASTAI_MAX_RETRIES": "1000"}, ("CASTAI_MAX_RETRIES",)),
    Invalid("page-limit-zero", {"CASTAI_PAGE_LIMIT": "0"}, ("CASTAI_PAGE_LIMIT",)),
    Invalid("schedule-cron-empty", {"SCHEDULE_CRON": ""}, ("SCHEDULE_CRON",)),
    Invalid("schedule-cron-macro-dagster-refuses", {"SCHEDULE_CRON": "@reboot"}, ("SCHEDULE_CRON",)),
    Invalid(
        "api-key-control-character",
        {"CASTAI_API_KEY": API_KEY[:9] + "\x07" + API_KEY[9:]},
        ("CASTAI_API_KEY",),
    ),
    Invalid(
        "s3-secret-line-break",
        {"S3_ACCESS_KEY_ID": "AKIAEXAMPLE", "S3_SECRET_ACCESS_KEY": "s3-\n" + S3_SECRET},
        ("S3_SECRET_ACCESS_KEY",),
    ),
)


def problems_of(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    error = info.value
    assert str(error).startswith(f"invalid configuration ({len(error.problems)} problem(s)):")
    assert all(f"  - {problem}" in str(error) for problem in error.problems)
    for secret in (API_KEY, S3_SECRET):
        assert secret not in str(error) and secret not in repr(error)
    return error.problems


def reported(problems: list[str], expected: tuple[str, ...]) -> None:
    """Exactly one problem line per expected name, each starting with it."""
    assert len(problems) == len(expected), problems
    for name in expected:
        assert [p for p in problems if p.startswith(f"{name}:")], (name, problems)


def test_the_valid_base_loads() -> None:
    settings = load_settings(VALID)
    assert settings.castai_api_key.get_secret_value() == API_KEY
    assert (settings.castai_organization_id, settings.s3_bucket, settings.s3_region) == (
        VALID["CASTAI_ORGANIZATION_ID"], VALID["S3_BUCKET"], VALID["S3_REGION"],
    )  # fmt: skip


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_each_invalid_setting_is_one_clear_problem(case: Invalid) -> None:
    reported(problems_of(VALID | case.env), case.reported_as)


def test_any_two_invalid_settings_are_reported_together() -> None:
    for first, second in itertools.combinations(CORPUS, 2):
        if set(first.env) & set(second.env) or first.reported_as == second.reported_as:
            continue  # the same variable (or the same rule) twice: not a combination
        reported(problems_of(VALID | first.env | second.env), first.reported_as + second.reported_as)


def test_everything_wrong_at_once_is_one_message_listing_everything() -> None:
    chosen: list[Invalid] = []
    for case in CORPUS:
        if not any(set(case.env) & set(c.env) or case.reported_as == c.reported_as for c in chosen):
            chosen.append(case)
    env = VALID | {k: v for case in chosen for k, v in case.env.items()}
    expected = tuple(name for case in chosen for name in case.reported_as)
    assert len(expected) >= 20
    reported(problems_of(env), expected)


@pytest.mark.parametrize(
    "cron", ["every day", "0 */6 * *", "61 * * * *", "0 0 32 * *", "0 0 * * mon-xyz", "@reboot", "0 0 31 2 *"]
)
def test_a_malformed_cron_is_a_configuration_problem(cron: str) -> None:
    reported(problems_of(VALID | {"SCHEDULE_CRON": cron}), ("SCHEDULE_CRON",))


def test_a_run_with_a_broken_configuration_fails_with_the_whole_list(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter_environment(
        monkeypatch,
        "http://api.cast.ai",
        API_KEY,
        VALID["CASTAI_ORGANIZATION_ID"],
        COLLECTION_GRANULARITY="weekly",
        S3_SECRET_ACCESS_KEY=S3_SECRET,
    )
    outcome = run_day(dg.DagsterInstance.ephemeral())
    assert not outcome.success
    failures = outcome.failures()
    # No bucket against the real API: S3_BUCKET and S3_REGION are listed with every other problem.
    listing = [t for t in failures if "invalid configuration (5 problem(s))" in t]
    assert listing, failures
    for name in (
        "CASTAI_API_URL",
        "COLLECTION_GRANULARITY",
        "S3_BUCKET",
        "S3_REGION",
        "S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY",
    ):
        assert f"  - {name}:" in listing[0]
    assert not [t for t in failures if API_KEY in t or S3_SECRET in t]


def test_a_macro_cron_loads_and_runs_and_a_refused_one_stops_the_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`@daily` used to load and then fail every run; now one rule decides at load and at run start."""
    from castai_focus_dagster import definitions
    from castai_focus_dagster.defs import schedules

    def load() -> dg.Definitions:
        """The code location as a fresh code server imports it, in this environment."""
        importlib.reload(schedules)
        return importlib.reload(definitions).defs

    exporter_environment(
        monkeypatch, "sandbox", "", "", SCHEDULE_CRON="@daily", LOCAL_OUTPUT_DIR=str(tmp_path / "out")
    )
    schedule = load().resolve_schedule_def("focus_restatement_schedule")
    assert schedule.cron_schedule == "@daily"
    with dg.instance_for_test() as instance:
        outcome = run_day(instance)
    assert outcome.success, outcome.failures()

    monkeypatch.setenv("SCHEDULE_CRON", "@reboot")
    with pytest.raises(ConfigError) as at_load:
        load()
    assert at_load.value.problems == problems_of({"CASTAI_API_URL": "sandbox", "SCHEDULE_CRON": "@reboot"})
    monkeypatch.setenv("SCHEDULE_CRON", "0 */6 * * *")
    load()  # leave loadable modules for the tests that follow
