"""Checks of configuration values that are rules rather than types: header-safe secrets, where the API
key may travel, the cron rule Dagster applies, and the rules between variables."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from croniter import croniter

SANDBOX = "sandbox"
# What an HTTP header value (X-API-Key) and a SigV4 secret can carry: printable ASCII, spaces inside.
_HEADER_SAFE = re.compile(r"[\x20-\x7e]*")


def csv_list(value: Any) -> tuple[str, ...]:
    """A comma-separated variable as its non-empty, stripped items."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(p.strip() for p in str(value).split(",") if p.strip())


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


def cross_field_problems(raw: Mapping[str, str], defaults: Mapping[str, str]) -> list[str]:
    """The rules between variables, on the raw environment text (unset: `defaults`)."""

    def get(name: str) -> str:
        return raw.get(name, defaults[name]).strip()

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
        if csv_list(get(f"COLLECTION_INCLUDE_{what}")) and csv_list(get(f"COLLECTION_EXCLUDE_{what}")):
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
