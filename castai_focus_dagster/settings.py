"""Exporter settings: every environment variable of the original castai-focus, plus our additions.

Each variable is one field of `Settings`: its default (the environment text), its meaning and its
origin; `SETTINGS_DOC`, and from it `docs/configuration.md`, is read off the model.
Invalid configuration raises one `ConfigError` that lists every problem at once.
Secrets are `SecretStr`: they never appear in a repr, a log line or an error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo

from castai_focus_dagster.config_rules import (
    SANDBOX,
    cron_problem,
    cross_field_problems,
    csv_list,
    header_safe,
)
from castai_focus_dagster.config_rules import (
    key_allowed_over as key_allowed_over,  # re-exported: the client checks the URL by the same rule
)

US_API_URL = "https://api.cast.ai"
EU_API_URL = "https://api.eu.cast.ai"
SANDBOX_ORGANIZATION_ID = "7e5b3c1a-0000-4000-8000-00000000c0de"

Granularity = Literal["hourly", "daily"]
OutputFormat = Literal["parquet", "csv"]
AllocationMode = Literal["workload", "split"]
LogLevel = Literal["debug", "info", "warn", "warning", "error"]
ScheduleStatus = Literal["running", "stopped"]

_CURRENCY = re.compile(r"^[A-Z]{3}$")
# ISO 4217 codes that are not national currencies (precious metals, testing, fund units, no currency).
_NON_NATIONAL = {"XAU", "XAG", "XPT", "XPD", "XTS", "XXX", "XDR", "XBA", "XBB", "XBC", "XBD", "XSU", "XUA"}


class ConfigError(ValueError):
    """Invalid configuration; the message lists every problem, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")


@dataclass(frozen=True)
class SettingDoc:
    env: str
    default: str
    meaning: str
    origin: str  # "original" (castai-focus README: same name and default) or "added"


def setting(default: str, meaning: str, *, added: bool = False, **constraints: Any) -> Any:
    """One variable: its default as environment text, its meaning and origin for the docs table."""
    origin = "added" if added else "original"
    return Field(default, description=meaning, json_schema_extra={"origin": origin}, **constraints)


LOG_LEVELS = {"debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40}


class Settings(BaseModel):
    """Validated exporter settings; build with `load_settings()`. Field names: the env names, lower-cased."""

    # Every default is the documented environment text, parsed and checked like a value that was set.
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    castai_api_url: str = setting(
        US_API_URL,
        "Cast AI API base URL (`https://api.cast.ai` US, `https://api.eu.cast.ai` EU); `sandbox` "
        "starts the built-in simulated Cast AI on 127.0.0.1.",
    )
    castai_api_key: SecretStr = setting(
        "",
        "Cast AI API key (sent as `X-API-Key`). Required unless `CASTAI_API_URL=sandbox`. Secret: "
        "never logged.",
    )
    castai_organization_id: str = setting(
        "",
        "Cast AI organization id: file names, pricing endpoints, BillingAccountId of clusters that "
        "name no organization. Required unless sandbox (then the sandbox organization).",
    )
    collection_lookback_hours: int = setting(
        "24",
        "How far back each scheduled tick exports, as the CronJob's lookback: every daily partition "
        "overlapping the last N hours is re-materialised (whole UTC days, not N hours).",
        ge=0,
        le=24 * 400,
    )
    collection_granularity: Granularity = setting(
        "hourly",
        "Bucket size of the charge periods: `hourly` (3600 s) or `daily` (86400 s). Not the "
        "partitioning, which is always daily.",
    )
    collection_include_cluster_ids: tuple[str, ...] = setting(
        "",
        "Comma-separated cluster ids to export (empty: all). An id the organisation does not have "
        "fails the run (a typo would silently drop that cluster's costs).",
    )
    collection_exclude_cluster_ids: tuple[str, ...] = setting(
        "",
        "Comma-separated cluster ids to skip. Exclusive with the include list.",
    )
    collection_include_namespaces: tuple[str, ...] = setting(
        "",
        "Comma-separated namespaces to export (empty: all); sent to Cast AI as `filter.namespaces` "
        "and applied again client-side.",
    )
    collection_exclude_namespaces: tuple[str, ...] = setting(
        "",
        "Comma-separated namespaces to drop. Exclusive with the include list.",
    )
    focus_billing_currency: str = setting(
        "USD",
        "ISO 4217 national currency code of all cost columns.",
    )
    focus_service_provider_name: str = setting(
        "CAST AI", "ServiceProviderName and the deprecated ProviderName.", min_length=1
    )
    focus_invoice_issuer_name: str = setting("CAST AI", "InvoiceIssuerName.", min_length=1)
    focus_publisher_name: str = setting(
        "Cast AI", "PublisherName (deprecated in FOCUS 1.3, still mandatory).", min_length=1
    )
    focus_billing_account_name: str = setting(
        "",
        "BillingAccountName (empty: the BillingAccountId).",
    )
    focus_tag_allowlist: tuple[str, ...] = setting(
        "",
        "Comma-separated label/tag keys kept in Tags, sent to Cast AI as `labelsToInclude`. Empty: "
        "all workload labels and cluster tags; the day's label names are then listed first (`POST "
        "/v1/cost-reports/workload-labels/names`) and all requested, so a label that appears after "
        "that listing is missed until the day is restated, and a very large label set makes a long "
        "request URL (a rejection fails the run: set the allowlist then).",
    )
    focus_enterprise_id: str = setting(
        "",
        "Cast AI enterprise (parent) organization id: when set, SubAccount* is the child organization"
        " that owns each cluster (from the enterprise's child-organization listing).",
    )
    s3_bucket: str = setting(
        "",
        "Target bucket. Required against the real Cast AI API unless `LOCAL_OUTPUT_DIR` is set "
        "explicitly; empty with the sandbox: output goes to `LOCAL_OUTPUT_DIR`.",
    )
    s3_region: str = setting(
        "",
        "Bucket region. Required with `S3_BUCKET` against the real API; empty with the sandbox: the "
        "AWS default chain (`AWS_REGION`).",
    )
    s3_prefix: str = setting(
        "focus/",
        "Key prefix before `version=focus-1.3/` (may be empty).",
    )
    s3_format: OutputFormat = setting(
        "parquet",
        "`parquet` (Snappy) or `csv`.",
    )
    s3_access_key_id: str = setting(
        "",
        "Static access key id. Empty: the default AWS chain (IRSA).",
    )
    s3_secret_access_key: SecretStr = setting(
        "",
        "Static secret key (with `S3_ACCESS_KEY_ID`). Secret: never logged.",
    )
    ternary_enabled: bool = setting(
        "false",
        "Also write each data object under `TERNARY_PATH_PREFIX`.",
    )
    ternary_path_prefix: str = setting(
        "ternary/",
        "Prefix of the Ternary copy.",
    )
    job_backfill_days: int = setting(
        "0",
        "Days to backfill on the first deployment (0 = off): the sensor's first tick ever (no cursor "
        "yet) requests the last N complete days once, even if a schedule run published first.",
        ge=0,
        le=3650,
    )
    log_level: LogLevel = setting(
        "info",
        "`debug`, `info`, `warn`, `error`: level of every line a run prints (Dagster's console logger"
        " included) and of the code server's worker, applied inside the process (never passed to "
        "`dagster code-server --log-level`, which refuses `warn`).",
    )
    local_output_dir: str = setting(
        "./data",
        "Output folder when `S3_BUCKET` is empty (same key layout). Against the real API only when "
        "set explicitly (a pod's folder is lost with the pod).",
        added=True,
        min_length=1,
    )
    job_gap_fill_days: int = setting(
        "7",
        "Days (yesterday backwards) the sensor checks every hour for days never published, or last "
        "published before they were complete, e.g. after an outage, and requests them (0 = off).",
        added=True,
        ge=0,
        le=3650,
    )
    schedule_default_status: ScheduleStatus = setting(
        "stopped",
        "`running` or `stopped`: the initial state of the schedule and the sensor, until someone "
        "toggles them in the UI. `running` in the Helm values, so the export runs from the first "
        "deployment as the CronJob did.",
        added=True,
    )
    delete_legacy_hourly_objects: bool = setting(
        "false",
        "`true`: publishing a day deletes the Go exporter's hour objects of that day (`castai-"
        "focus-{orgId}-{day}-HH.*`, HH 01-23) under `S3_PREFIX` (and the Ternary copy), logging each "
        "key, and replaces a `-00` object that neither our manifest lists nor our writer marked. "
        "`false`: hour objects are kept and a warning lists them (they double-count that day); a "
        "foreign `-00` object fails the day, nothing written.",
        added=True,
    )
    s3_endpoint_url: str = setting(
        "",
        "S3-compatible endpoint (MinIO, moto, Ceph). Empty: AWS.",
        added=True,
    )
    focus_service_name: str = setting("Kubernetes", "ServiceName.", added=True, min_length=1)
    focus_allocation_mode: AllocationMode = setting(
        "workload",
        "`workload` (one row per workload charge) or `split` (FOCUS 1.3 split cost allocation).",
        added=True,
    )
    schedule_cron: str = setting(
        "0 */6 * * *",
        "Cron (UTC) of the export schedule (the default is the CronJob's): five fields or a macro "
        "such as `@hourly`, `@daily`, `@weekly`; checked by Dagster's schedule rule when the code "
        "location loads and when a run starts.",
        added=True,
        min_length=1,
    )
    castai_max_concurrency: int = setting("20", "Clusters fetched in parallel.", added=True, ge=1, le=256)
    castai_rate_limit_rps: float = setting(
        "20",
        "The organisation's whole Cast AI request budget (requests/second), shared by every concurrent "
        "run: each run paces its requests at ⌊budget / slots of the `castai_api` pool⌋ (the whole budget "
        "when the instance sets no pool limit), so the runs together stay within it (docs/scaling.md).",
        added=True,
        gt=0,
        le=10_000,
    )
    castai_timeout_seconds: float = setting(
        "60",
        "Total deadline of one HTTP request to Cast AI: connect, send and the whole answer together "
        "(a trickling answer fails at the deadline, as a timeout, and is retried).",
        added=True,
        gt=0,
        le=3600,
    )
    castai_max_retries: int = setting(
        "6", "Retries on 429/502/503/504 and connection errors.", added=True, ge=0, le=50
    )
    castai_page_limit: int = setting("100", "`page.limit` for paged endpoints.", added=True, ge=1, le=10_000)

    @field_validator(
        "collection_include_cluster_ids",
        "collection_exclude_cluster_ids",
        "collection_include_namespaces",
        "collection_exclude_namespaces",
        "focus_tag_allowlist",
        mode="before",
    )
    @classmethod
    def _split_csv(cls, value: Any) -> tuple[str, ...]:
        return csv_list(value)

    @field_validator(
        "collection_granularity",
        "s3_format",
        "log_level",
        "focus_allocation_mode",
        "schedule_default_status",
        mode="before",
    )
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("castai_api_key", "s3_secret_access_key", mode="before")
    @classmethod
    def _secret(cls, value: Any) -> Any:
        """Surrounding whitespace stripped (a secret file ending in a newline, as `kubectl create secret
        --from-file` stores it); any other control or non-ASCII character refused without showing it."""
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(raw, str):
            return value
        raw = raw.strip()
        if not header_safe(raw):
            raise ValueError(
                "holds a control or non-ASCII character inside the value (not shown); a key or secret "
                "is printable ASCII: check how the secret was created"
            )
        return SecretStr(raw)

    @field_validator("schedule_cron", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("s3_access_key_id", mode="before")
    @classmethod
    def _access_key_id(cls, value: Any) -> Any:
        """Stripped like its secret (both come from one Kubernetes Secret); a control or non-ASCII
        character inside could not be signed into a request header."""
        if not isinstance(value, str):
            return value
        value = value.strip()
        if not header_safe(value):
            raise ValueError(
                "holds a control or non-ASCII character inside the value; an access key id is "
                "printable ASCII: check how the secret was created"
            )
        return value

    @field_validator("focus_billing_currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not _CURRENCY.match(value) or value in _NON_NATIONAL:
            raise ValueError("must be an ISO 4217 national currency code such as USD or EUR")
        return value

    @field_validator("s3_prefix", "ternary_path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip().lstrip("/")
        return value if not value or value.endswith("/") else value + "/"

    # Derived views -------------------------------------------------------------------------------

    @property
    def is_sandbox(self) -> bool:
        return self.castai_api_url.strip().lower() == SANDBOX

    @property
    def step_seconds(self) -> int:
        return 3600 if self.collection_granularity == "hourly" else 86400

    @property
    def uses_s3(self) -> bool:
        return bool(self.s3_bucket)

    @property
    def python_log_level(self) -> int:
        """LOG_LEVEL as a `logging` level number (`warn` is WARNING)."""
        return LOG_LEVELS[self.log_level]

    @property
    def organization_id(self) -> str:
        return self.castai_organization_id or (SANDBOX_ORGANIZATION_ID if self.is_sandbox else "")

    @property
    def billing_account_name(self) -> str:
        return self.focus_billing_account_name or self.organization_id


def _doc(name: str, info: FieldInfo) -> SettingDoc:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return SettingDoc(name.upper(), str(info.default), str(info.description), str(extra.get("origin")))


# The variable table of docs/configuration.md, in declaration order.
SETTINGS_DOC: tuple[SettingDoc, ...] = tuple(_doc(n, info) for n, info in Settings.model_fields.items())
_DEFAULTS = {d.env: d.default for d in SETTINGS_DOC}


def schedule_cron(environ: Mapping[str, str] | None = None) -> str:
    """SCHEDULE_CRON for the schedule definition, checked by the same rule as every run's settings."""
    env = os.environ if environ is None else environ
    expression = env.get("SCHEDULE_CRON", _DEFAULTS["SCHEDULE_CRON"]).strip()
    problem = cron_problem(expression)
    if problem:
        raise ConfigError([f"SCHEDULE_CRON: {problem}"])
    return expression


def _field_problem(err: Mapping[str, Any]) -> str:
    field = str(err["loc"][0]) if err.get("loc") else "?"
    # Only the field name and pydantic's message: never the input value (it may be a secret).
    return f"{field.upper()}: {err['msg']}"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from the environment (or a mapping); raise one ConfigError listing every problem."""
    env = os.environ if environ is None else environ
    raw = {d.env: env[d.env] for d in SETTINGS_DOC if d.env in env}
    if not raw.get("LOCAL_OUTPUT_DIR", "set").strip():
        del raw["LOCAL_OUTPUT_DIR"]  # blank = not set (Helm lists every variable): the default, not explicit
    values: dict[str, Any] = {name.lower(): raw.get(name, default) for name, default in _DEFAULTS.items()}
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        problems.extend(_field_problem(e) for e in exc.errors(include_input=False, include_url=False))
    problems.extend(cross_field_problems(raw, _DEFAULTS))
    if problems:
        raise ConfigError(problems)
    assert settings is not None
    return settings
