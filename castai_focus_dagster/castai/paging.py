"""Cast AI's cursor paging: follow the cursor until it is empty, refusing a loop and a runaway."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from castai_focus_dagster.castai.errors import CastAIError
from castai_focus_dagster.castai.session import ApiSession

T = TypeVar("T")


def paginate(
    session: ApiSession,
    endpoint: str,
    path: str,
    params: Sequence[tuple[str, str]],
    decode_page: Callable[[bytes], tuple[T, str | None]],
    *,
    page_limit: int,
    max_pages: int,
    cluster_id: str | None = None,
    json_body: bytes | None = None,
) -> Iterator[T]:
    """Each decoded page in order; a cursor already followed, or more than `max_pages`, is an error."""
    seen: set[str] = set()
    cursor: str | None = None
    for page_number in range(1, max_pages + 1):
        query = [*params, ("page.limit", str(page_limit))]
        if cursor:
            query.append(("page.cursor", cursor))
        body = session.get(endpoint, path, query, cluster_id=cluster_id, json_body=json_body)
        page, cursor = session.decoded(endpoint, cluster_id, decode_page, body)
        del body
        yield page
        del page
        if not cursor:
            return
        if cursor in seen:
            raise CastAIError(
                f"cursor loop: page {page_number} returned a cursor already followed",
                endpoint=endpoint,
                cluster_id=cluster_id,
                reason="cursor loop",
            )
        seen.add(cursor)
    raise CastAIError(
        f"more than {max_pages} pages (page.limit={page_limit}); giving up",
        endpoint=endpoint,
        cluster_id=cluster_id,
        reason="page cap",
    )
