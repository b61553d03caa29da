"""Exporter settings: every environment variable of the original castai-focus, plus our additions.

The variable table (name, default, meaning) is data in `SETTINGS_DOC` so that
`docs/configuration.md` is generated from it and a test keeps the two identical.
Invalid configuration raises one `ConfigError` that lists every problem at once.
Secrets are `SecretStr`: they never appear in a repr, a log line or an error.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

SANDBOX = "sandbox"
US_API_URL = "https://api.cast.ai"
EU_API_URL = "https://api.eu.cast.ai"
SANDBOX_ORGANIZATION_ID = "7e5b3c1a-0000-4000-8000-00000000c0de"

Granularity = Literal["hourly", "daily"]
OutputFormat = Literal["parquet", "csv"]
AllocationMode = Literal["workload", "split"]
LogLevel = Literal["debug", "info", "warn", "warning", "error"]
ScheduleStatus = Literal["running", "stopped"]

_CURRENCY = re.compile(r"^[A-Z]{3}$")
# What an HTTP header value (X-API-Key) and a SigV4 secret can carry: printable ASCII, spaces inside.
_HEADER_SAFE = re.compile(r"[\x20-\x7e]*")
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


SETTINGS_DOC: tuple[SettingDoc, ...] = (
    SettingDoc(
        "CASTAI_API_URL",
        US_API_URL,
        "Cast AI API base URL (`https://api.cast.ai` US, `https://api.eu.cast.ai` EU); "
        "`sandbox` starts the built-in simulated Cast AI on 127.0.0.1.",
        "original",
    ),
    SettingDoc(
        "CASTAI_API_KEY",
        "",
        "Cast AI API key (sent as `X-API-Key`). Required unless "
        "`CASTAI_API_URL=sandbox`. Secret: never logged.",
        "original",
    ),
    SettingDoc(
        "CASTAI_ORGANIZATION_ID",
        "",
        "Cast AI organization id: file names, pricing endpoints, BillingAccountId of clusters that "
        "name no organization. Required unless sandbox (then the sandbox organization).",
        "original",
    ),
    SettingDoc(
        "COLLECTION_LOOKBACK_HOURS",
        "24",
        "How far back each scheduled tick exports, as the CronJob's lookback: every daily "
        "partition overlapping the last N hours is re-materialised (whole UTC days, not N hours).",
        "original",
    ),
    SettingDoc(
        "COLLECTION_GRANULARITY",
        "hourly",
        "Bucket size of the charge periods: `hourly` "
        "(3600 s) or `daily` (86400 s). Not the partitioning, which is always daily.",
        "original",
    ),
    SettingDoc(
        "COLLECTION_INCLUDE_CLUSTER_IDS",
        "",
        "Comma-separated cluster ids to export (empty: all). An id the organisation does not have "
        "fails the run (a typo would silently drop that cluster's costs).",
        "original",
    ),
    SettingDoc(
        "COLLECTION_EXCLUDE_CLUSTER_IDS",
        "",
        "Comma-separated cluster ids to skip. Exclusive with the include list.",
        "original",
    ),
    SettingDoc(
        "COLLECTION_INCLUDE_NAMESPACES",
        "",
        "Comma-separated namespaces to export (empty: all); "
        "sent to Cast AI as `filter.namespaces` and applied again client-side.",
        "original",
    ),
    SettingDoc(
        "COLLECTION_EXCLUDE_NAMESPACES",
        "",
        "Comma-separated namespaces to drop. Exclusive with the include list.",
        "original",
    ),
    SettingDoc(
        "FOCUS_BILLING_CURRENCY", "USD", "ISO 4217 national currency code of all cost columns.", "original"
    ),
    SettingDoc(
        "FOCUS_SERVICE_PROVIDER_NAME",
        "CAST AI",
        "ServiceProviderName and the deprecated ProviderName.",
        "original",
    ),
    SettingDoc("FOCUS_INVOICE_ISSUER_NAME", "CAST AI", "InvoiceIssuerName.", "original"),
    SettingDoc(
        "FOCUS_PUBLISHER_NAME",
        "Cast AI",
        "PublisherName (deprecated in FOCUS 1.3, still mandatory).",
        "original",
    ),
    SettingDoc(
        "FOCUS_BILLING_ACCOUNT_NAME", "", "BillingAccountName (empty: the BillingAccountId).", "original"
    ),
    SettingDoc(
        "FOCUS_TAG_ALLOWLIST",
        "",
        "Comma-separated label/tag keys kept in Tags, sent to Cast AI as `labelsToInclude`. Empty: all "
        "workload labels and cluster tags; the day's label names are then listed first "
        "(`POST /v1/cost-reports/workload-labels/names`) and all requested, so a label that appears "
        "after that listing is missed until the day is restated, and a very large label set makes a "
        "long request URL (a rejection fails the run: set the allowlist then).",
        "original",
    ),
    SettingDoc(
        "FOCUS_ENTERPRISE_ID",
        "",
        "Cast AI enterprise (parent) organization id: when set, "
        "SubAccount* is the child organization that owns each cluster (from the enterprise's "
        "child-organization listing).",
        "original",
    ),
    SettingDoc(
        "S3_BUCKET",
        "",
        "Target bucket. Required against the real Cast AI API unless `LOCAL_OUTPUT_DIR` is set "
        "explicitly; empty with the sandbox: output goes to `LOCAL_OUTPUT_DIR`.",
        "original",
    ),
    SettingDoc(
        "S3_REGION",
        "",
        "Bucket region. Required with `S3_BUCKET` against the real API; empty with the sandbox: the AWS "
        "default chain (`AWS_REGION`).",
        "original",
    ),
    SettingDoc("S3_PREFIX", "focus/", "Key prefix before `version=focus-1.3/` (may be empty).", "original"),
    SettingDoc("S3_FORMAT", "parquet", "`parquet` (Snappy) or `csv`.", "original"),
    SettingDoc(
        "S3_ACCESS_KEY_ID", "", "Static access key id. Empty: the default AWS chain (IRSA).", "original"
    ),
    SettingDoc(
        "S3_SECRET_ACCESS_KEY",
        "",
        "Static secret key (with `S3_ACCESS_KEY_ID`). Secret: never logged.",
        "original",
    ),
    SettingDoc(
        "TERNARY_ENABLED", "false", "Also write each data object under `TERNARY_PATH_PREFIX`.", "original"
    ),
    SettingDoc("TERNARY_PATH_PREFIX", "ternary/", "Prefix of the Ternary copy.", "original"),
    SettingDoc(
        "JOB_BACKFILL_DAYS",
        "0",
        "Days to backfill on the first deployment (0 = off): the sensor's first tick ever (no "
        "cursor yet) requests the last N complete days once, even if a schedule run published first.",
        "original",
    ),
    SettingDoc(
        "LOG_LEVEL",
        "info",
        "`debug`, `info`, `warn`, `error`: level of every line a run prints (Dagster's console "
        "logger included) and of the code server's worker, applied inside the process (never "
        "passed to `dagster code-server --log-level`, which refuses `warn`).",
        "original",
    ),
    SettingDoc(
        "LOCAL_OUTPUT_DIR",
        "./data",
        "Output folder when `S3_BUCKET` is empty (same key layout). Against the real API only when set "
        "explicitly (a pod's folder is lost with the pod).",
        "added",
    ),
    SettingDoc(
        "JOB_GAP_FILL_DAYS",
        "7",
        "Days (yesterday backwards) the sensor checks every hour for days never published, e.g. after "
        "an outage, and requests them (0 = off).",
        "added",
    ),
    SettingDoc(
        "SCHEDULE_DEFAULT_STATUS",
        "stopped",
        "`running` or `stopped`: the initial state of the schedule and the sensor, until someone toggles "
        "them in the UI. `running` in the Helm values, so the export runs from the first deployment as "
        "the CronJob did.",
        "added",
    ),
    SettingDoc(
        "DELETE_LEGACY_HOURLY_OBJECTS",
        "false",
        "`true`: publishing a day deletes the Go exporter's hour objects of that day "
        "(`castai-focus-{orgId}-{day}-HH.*`, HH 01-23) under `S3_PREFIX` (and the Ternary copy), logging "
        "each key, and replaces a `-00` object that neither our manifest lists nor our writer marked. "
        "`false`: hour objects are kept and a warning lists them (they double-count that day); a "
        "foreign `-00` object fails the day, nothing written.",
        "added",
    ),
    SettingDoc("S3_ENDPOINT_URL", "", "S3-compatible endpoint (MinIO, moto, Ceph). Empty: AWS.", "added"),
    SettingDoc("FOCUS_SERVICE_NAME", "Kubernetes", "ServiceName.", "added"),
    SettingDoc(
        "FOCUS_ALLOCATION_MODE",
        "workload",
        "`workload` (one row per workload charge) or `split` (FOCUS 1.3 split cost allocation).",
        "added",
    ),
    SettingDoc(
        "SCHEDULE_CRON",
        "0 */6 * * *",
        "Cron (UTC) of the export schedule (the default is the CronJob's): five fields or a macro such as "
        "`@hourly`, `@daily`, `@weekly`; checked by Dagster's schedule rule when the code location loads "
        "and when a run starts.",
        "added",
    ),
    SettingDoc("CASTAI_MAX_CONCURRENCY", "20", "Clusters fetched in parallel.", "added"),
    SettingDoc(
        "CASTAI_RATE_LIMIT_RPS",
        "20",
        "The organisation's whole Cast AI request budget (requests/second), shared by every concurrent "
        "run: each run paces its requests at ⌊budget / slots of the `castai_api` pool⌋ (the whole budget "
        "when the instance sets no pool limit), so no 1-second window holds more (docs/scaling.md).",
        "added",
    ),
    SettingDoc(
        "CASTAI_TIMEOUT_SECONDS",
        "60",
        "Total deadline of one HTTP request to Cast AI: connect, send and the whole answer together "
        "(a trickling answer fails at the deadline, as a timeout, and is retried).",
        "added",
    ),
    SettingDoc("CASTAI_MAX_RETRIES", "6", "Retries on 429/502/503/504 and connection errors.", "added"),
    SettingDoc("CASTAI_PAGE_LIMIT", "100", "`page.limit` for paged endpoints.", "added"),
)

_DEFAULTS = {d.env: d.default for d in SETTINGS_DOC}
LOG_LEVELS = {"debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40}


def _csv(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(p.strip() for p in str(value).split(",") if p.strip())


class Settings(BaseModel):
    """Validated exporter settings; build with `load_settings()`. Field names: the env names, lower-cased."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    castai_api_url: str
    castai_api_key: SecretStr = SecretStr("")
    castai_organization_id: str = ""
    collection_lookback_hours: int = Field(ge=0, le=24 * 400)
    collection_granularity: Granularity
    collection_include_cluster_ids: tuple[str, ...] = ()
    collection_exclude_cluster_ids: tuple[str, ...] = ()
    collection_include_namespaces: tuple[str, ...] = ()
    collection_exclude_namespaces: tuple[str, ...] = ()
    focus_billing_currency: str
    focus_service_provider_name: str = Field(min_length=1)
    focus_invoice_issuer_name: str = Field(min_length=1)
    focus_publisher_name: str = Field(min_length=1)
    focus_billing_account_name: str = ""
    focus_tag_allowlist: tuple[str, ...] = ()
    focus_enterprise_id: str = ""
    s3_bucket: str = ""
    s3_region: str = ""
    s3_prefix: str = "focus/"
    s3_format: OutputFormat
    s3_access_key_id: str = ""
    s3_secret_access_key: SecretStr = SecretStr("")
    ternary_enabled: bool
    ternary_path_prefix: str
    job_backfill_days: int = Field(ge=0, le=3650)
    log_level: LogLevel
    local_output_dir: str = Field(min_length=1)
    job_gap_fill_days: int = Field(ge=0, le=3650)
    schedule_default_status: ScheduleStatus
    delete_legacy_hourly_objects: bool
    s3_endpoint_url: str = ""
    focus_service_name: str = Field(min_length=1)
    focus_allocation_mode: AllocationMode
    schedule_cron: str = Field(min_length=1)
    castai_max_concurrency: int = Field(ge=1, le=256)
    castai_rate_limit_rps: float = Field(gt=0, le=10_000)
    castai_timeout_seconds: float = Field(gt=0, le=3600)
    castai_max_retries: int = Field(ge=0, le=50)
    castai_page_limit: int = Field(ge=1, le=10_000)

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
        return _csv(value)

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


def header_safe(value: str) -> bool:
    """Whether `value` can travel as an HTTP header value (and a SigV4 secret): printable ASCII."""
    return _HEADER_SAFE.fullmatch(value) is not None


def _is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def key_allowed_over(url: str) -> bool:
    """The API key may travel over https anywhere, over plain http only to a loopback host."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and _is_loopback(parts.hostname or "")


def cron_problem(expression: str) -> str | None:
    """Why the restatement schedule cannot run on `expression`, or None.

    The rule is Dagster's own (`is_valid_cron_string`, on the croniter it vendors): croniter accepts it,
    it expands to five fields (no seconds), and it is not a 30th or 31st of February. A test holds this
    against Dagster's `ScheduleDefinition` so settings accept exactly what the schedule runs on.
    """
    try:
        fields = croniter.expand(expression)[0] if croniter.is_valid(expression) else []
    except (ValueError, KeyError):
        fields = []
    february_30 = len(fields) == 5 and fields[3] == [2] and len(fields[2]) == 1 and fields[2][0] in (30, 31)
    if len(fields) != 5 or february_30:
        return (
            "not a cron schedule Dagster accepts: five fields (minute hour day-of-month month "
            f"day-of-week, UTC) or a macro such as @hourly, @daily, @weekly; got {expression!r}"
        )
    return None


def schedule_cron(environ: Mapping[str, str] | None = None) -> str:
    """SCHEDULE_CRON for the schedule definition, checked by the same rule as every run's settings."""
    env = os.environ if environ is None else environ
    expression = env.get("SCHEDULE_CRON", _DEFAULTS["SCHEDULE_CRON"]).strip()
    problem = cron_problem(expression)
    if problem:
        raise ConfigError([f"SCHEDULE_CRON: {problem}"])
    return expression


def _cross_field_problems(raw: Mapping[str, str]) -> list[str]:
    def get(name: str) -> str:
        return raw.get(name, _DEFAULTS[name]).strip()

    problems: list[str] = []
    url = get("CASTAI_API_URL")
    sandbox = url.lower() == SANDBOX
    if not sandbox:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(f"CASTAI_API_URL: must be an http(s) URL or 'sandbox', got {url!r}")
        elif not key_allowed_over(url):
            problems.append(
                "CASTAI_API_URL: plain http is allowed only to a loopback host "
                "(the API key would travel unencrypted)"
            )
        if not get("CASTAI_API_KEY"):
            problems.append("CASTAI_API_KEY: required when CASTAI_API_URL is not 'sandbox'")
        if not get("CASTAI_ORGANIZATION_ID"):
            problems.append("CASTAI_ORGANIZATION_ID: required when CASTAI_API_URL is not 'sandbox'")
    for what in ("CLUSTER_IDS", "NAMESPACES"):
        if _csv(get(f"COLLECTION_INCLUDE_{what}")) and _csv(get(f"COLLECTION_EXCLUDE_{what}")):
            problems.append(
                f"COLLECTION_INCLUDE_{what} and COLLECTION_EXCLUDE_{what}: set one or the other, not both"
            )
    bucket = get("S3_BUCKET")
    if not sandbox and not bucket and not raw.get("LOCAL_OUTPUT_DIR", "").strip():
        problems.append(
            "S3_BUCKET: required against the real Cast AI API (or set LOCAL_OUTPUT_DIR explicitly to "
            "write to a local folder)"
        )
    if not sandbox and (bucket or not raw.get("LOCAL_OUTPUT_DIR", "").strip()) and not get("S3_REGION"):
        problems.append("S3_REGION: required with S3_BUCKET against the real Cast AI API")
    if bool(get("S3_ACCESS_KEY_ID")) != bool(get("S3_SECRET_ACCESS_KEY")):
        problems.append(
            "S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY: set both (static keys) or neither "
            "(default AWS credential chain / IRSA)"
        )
    endpoint = get("S3_ENDPOINT_URL")
    if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
        problems.append(f"S3_ENDPOINT_URL: must be an http(s) URL, got {endpoint!r}")
    cron = get("SCHEDULE_CRON")
    problem = cron_problem(cron) if cron else None
    if problem:
        problems.append(f"SCHEDULE_CRON: {problem}")
    if get("TERNARY_ENABLED").lower() in ("true", "1", "yes", "on") and not get("TERNARY_PATH_PREFIX"):
        problems.append("TERNARY_PATH_PREFIX: required when TERNARY_ENABLED is true")
    return problems


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
    problems.extend(_cross_field_problems(raw))
    if problems:
        raise ConfigError(problems)
    assert settings is not None
    return settings
