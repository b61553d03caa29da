"""The two failures of the Cast AI layer: `InvalidResponse` (an answer that cannot be decoded, raised
by the decoders) and `CastAIError` (a call that failed for good, raised by the client)."""

from __future__ import annotations

# The reason of an answer in buckets of another size than requested: the day cannot be exported.
WRONG_STEP = "wrong step"


class InvalidResponse(ValueError):
    """A response that cannot be decoded; `reason` is "invalid JSON", "invalid UTF-8", "invalid response",
    "error body" or "wrong step"."""

    def __init__(self, detail: str, *, reason: str, field: str | None = None, workload: str | None = None):
        super().__init__(detail)
        self.reason = reason
        self.field = field
        self.workload = workload


class CastAIError(RuntimeError):
    """A Cast AI call that failed for good. `reason` is short ("HTTP 404", "timeout", "invalid JSON", ...).

    `transient` is True only when the client gave up on a fault it retries (429, 502/503/504, timeouts,
    connection errors): a later attempt may succeed. Everything else (other statuses, undecodable or
    contradictory answers, an unusable request) fails the same way every time.
    """

    def __init__(
        self,
        detail: str,
        *,
        endpoint: str,
        cluster_id: str | None = None,
        field: str | None = None,
        status: int | None = None,
        reason: str | None = None,
        transient: bool = False,
    ):
        self.detail = detail
        self.transient = transient
        self.endpoint = endpoint
        self.cluster_id = cluster_id
        self.field = field
        self.status = status
        self.reason = reason or (f"HTTP {status}" if status is not None else "error")
        where = [f"Cast AI {endpoint}"]
        if cluster_id:
            where.append(f"cluster {cluster_id}")
        if field:
            where.append(f"field {field}")
        if status is not None:
            where.append(f"HTTP {status}")
        super().__init__(f"{' '.join(where)}: {detail}")
