"""The one extra request that tells a cluster which ran only in the window's last bucket from an
answer of one coarser bucket covering the whole window."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

from castai_focus_dagster.castai.decode import decode_workload_costs_page
from castai_focus_dagster.castai.endpoints import WORKLOAD_COSTS
from castai_focus_dagster.castai.errors import WRONG_STEP, CastAIError
from castai_focus_dagster.castai.paging import paginate
from castai_focus_dagster.castai.session import ApiSession
from castai_focus_dagster.castai.units import rfc3339
from castai_focus_dagster.castai.validation import BucketWindow
from castai_focus_dagster.castai.wire import WorkloadItem


def probe_coarser_bucket(
    session: ApiSession,
    page_limit: int,
    max_pages: int,
    cluster_id: str,
    path: str,
    params: Sequence[tuple[str, str]],
    window: BucketWindow,
    wanted: Callable[[WorkloadItem], bool],
) -> None:
    """Every bucket sat at the window's last timestamp: ask once for (start, end - step], reading its
    pages until one holds a bucket (an empty page may still carry a cursor).

    A cluster that really ran only in the last bucket has no bucket there; any bucket in that answer
    means the lone timestamp was one coarser bucket covering the whole window (wrong step). Only
    workloads past the namespace filters count, as in the answer being checked.
    """
    step = window.step_seconds
    probe_end = window.end - timedelta(seconds=step)
    query = [(k, rfc3339(probe_end) if k == "endTime" else v) for k, v in params]
    pages = paginate(
        session,
        WORKLOAD_COSTS,
        path,
        query,
        decode_workload_costs_page,
        page_limit=page_limit,
        max_pages=max_pages,
        cluster_id=cluster_id,
    )
    if any(item.cost_metrics for page in pages for item in page.items if wanted(item)):
        coarse = int((window.end - window.start).total_seconds())
        raise CastAIError(
            f"every bucket is at the window's last timestamp {rfc3339(window.end)}, yet the same "
            f"query for ({rfc3339(window.start)}, {rfc3339(probe_end)}] answered buckets too: "
            f"answered {coarse}s buckets, requested stepSeconds={step} (wrong bucket size)",
            endpoint=WORKLOAD_COSTS,
            cluster_id=cluster_id,
            field="timestamp",
            reason=WRONG_STEP,
        )
