"""What is wrong with an answer that did not decode: the field, the byte offset and the workload, for
the error message (error path only: these helpers may re-read the body slowly)."""

from __future__ import annotations

import re

import msgspec

from castai_focus_dagster.castai.errors import InvalidResponse
from castai_focus_dagster.castai.wire import MISSING_IDENTITY, ErrorResponse

_ERROR_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING_FIELD = re.compile(r"missing required field `(?P<field>[^`]+)`")
_ITEM_INDEX = re.compile(r"^\.(?P<list>\w+)\[(?P<index>\d+)\]")
_LAST_KEY = re.compile(rb'"((?:[^"\\]|\\.){1,256})"\s*:')
_ERROR = msgspec.json.Decoder(ErrorResponse, strict=False)


def invalid_utf8(body: bytes) -> InvalidResponse:
    """Name the offset, the nearest JSON key before it and, in workload costs, the workload."""
    try:
        body.decode("utf-8")
        offset = -1  # msgspec disagreed with Python's codec: report without a position
    except UnicodeDecodeError as exc:
        offset = exc.start
    keys = _LAST_KEY.findall(body[: max(offset, 0)][-4096:])
    field = keys[-1].decode("utf-8", "backslashreplace") if keys else None
    for key in reversed(keys):  # inside a label list ({"name": ..., "value": ...}): name the list
        if key not in (b"name", b"value"):
            field = "labels" if key == b"labels" else field
            break
    workload = None
    try:  # error path only: read the body again with the bad bytes replaced, to name the workload
        items = msgspec.json.decode(body.decode("utf-8", "replace")).get("items")
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict) and "\ufffd" in msgspec.json.encode(item).decode():
                workload = workload_label(
                    str(item.get("namespace", "?")),
                    str(item.get("workloadType", "?")),
                    str(item.get("workloadName", "?")),
                )
                break
    except (msgspec.DecodeError, AttributeError):
        pass
    where = f" at byte {offset}" if offset >= 0 else ""
    detail = f"the body is not valid UTF-8{where} (JSON text must be)"
    if workload is not None:
        detail += f" (workload {workload})"
    return InvalidResponse(detail, reason="invalid UTF-8", field=field, workload=workload)


def body_kind(body: bytes) -> str:
    head = body.lstrip()[:64].lower()
    if head.startswith(b"<"):
        return "an HTML/XML document instead of JSON"
    if not head:
        return "an empty body"
    return "malformed JSON"


def validation_problem(exc: msgspec.ValidationError, body: bytes) -> InvalidResponse:
    """Name the field and, inside a workload-costs item, the workload the bad value belongs to."""
    message = str(exc)
    path_match = _ERROR_PATH.search(message)
    path = path_match.group("path") if path_match else ""
    missing = _MISSING_FIELD.search(message)
    field = missing.group("field") if missing else (re.findall(r"\.(\w+)", path) or [None])[-1]
    workload = None
    item = _ITEM_INDEX.match(path)
    if item and item.group("list") == "items":
        workload = _workload_at(body, int(item.group("index")))
    detail = message if workload is None else f"{message} (workload {workload})"
    return InvalidResponse(detail, reason="invalid response", field=field, workload=workload)


def _workload_at(body: bytes, index: int) -> str | None:
    """Error path only: re-read the body generically to name the workload at items[index]."""
    try:
        item = msgspec.json.decode(body)["items"][index]
    except (msgspec.DecodeError, UnicodeDecodeError, LookupError, TypeError):
        return None
    if not isinstance(item, dict):
        return None
    return workload_label(
        *(str(item.get(name) or MISSING_IDENTITY) for name in ("namespace", "workloadType", "workloadName"))
    )


def workload_label(namespace: str, workload_type: str, workload_name: str) -> str:
    return f"{namespace}/{workload_type}/{workload_name}"


def error_message(body: bytes) -> tuple[str, str | None]:
    """(message, first violated field) of an ErrorResponse body; a short description for other bodies."""
    try:
        error = _ERROR.decode(body)
    except UnicodeDecodeError:
        return "an error response that is not valid UTF-8", None
    except msgspec.DecodeError:
        return f"{body_kind(body)} in the error response", None
    violations = [v for v in error.field_violations if isinstance(v, dict)]
    field = str(violations[0].get("field")) if violations and violations[0].get("field") else None
    details = "; ".join(f"{v.get('field', '?')}: {v.get('description', '')}" for v in violations)
    return (f"{error.message} ({details})" if details else error.message) or "no message", field
