"""Cast AI organization endpoints (pricing, discounts, enterprise children, platform usage): the
calls enrichment makes once per run, apart from the per-cluster cost endpoints of `CastAIClient`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar
from urllib.parse import quote

from castai_focus_dagster.castai.decode import (
    decode_child_organizations_page,
    decode_cluster_prices_page,
    decode_default_pricing,
    decode_discounts_page,
    decode_platform_usage,
)
from castai_focus_dagster.castai.endpoints import (
    CLUSTER_PRICES,
    DEFAULT_PRICING,
    DISCOUNTS,
    ENTERPRISE_ORGANIZATIONS,
    PLATFORM_USAGE,
)
from castai_focus_dagster.castai.errors import CastAIError
from castai_focus_dagster.castai.models import (
    ChildOrganization,
    ClusterPrice,
    DefaultPricing,
    Discount,
    FeatureUsage,
)
from castai_focus_dagster.castai.paging import paginate
from castai_focus_dagster.castai.session import ApiSession

T = TypeVar("T")


class OrganizationEndpoints:
    """Base of `CastAIClient`: the organization-wide endpoints and the paging they share with it."""

    organization_id: str
    _session: ApiSession
    _log: logging.Logger
    _page_limit: int
    _max_pages: int

    def cluster_prices(self) -> dict[str, ClusterPrice]:
        """Custom (or default-marked) CPU/memory unit prices by cluster id."""
        path = f"/pricing/v1/organizations/{quote(self.organization_id, safe='')}/clusters/prices"
        prices: dict[str, ClusterPrice] = {}
        for page in self._pages(CLUSTER_PRICES, path, [], decode_cluster_prices_page):
            for price in page:
                prices.setdefault(price.cluster_id, price)
        return prices

    def default_pricing(self) -> DefaultPricing | None:
        """The organization's default CPU/memory prices; None when the endpoint answers 404."""
        path = (
            f"/pricing/v1beta/organizations/{quote(self.organization_id, safe='')}"
            "/anywhere-cluster-default-pricing"
        )
        try:
            body = self._session.get(DEFAULT_PRICING, path)
        except CastAIError as exc:
            if exc.status == 404:
                return None
            raise
        return self._session.decoded(DEFAULT_PRICING, None, decode_default_pricing, body)

    def discounts(self) -> list[Discount]:
        """Every discount (enabled or not: the consumer decides); discounts without pricing are skipped."""
        discounts: list[Discount] = []
        for page in self._pages(DISCOUNTS, "/v1/discounts", [], decode_discounts_page):
            discounts.extend(page.discounts)
            if page.unpriced_ids:
                self._log.warning(
                    "Cast AI discounts: skipped %d discount(s) without pricing: %s",
                    len(page.unpriced_ids),
                    ", ".join(page.unpriced_ids),
                )
        return discounts

    def child_organizations(self, enterprise_id: str) -> dict[str, ChildOrganization]:
        """Child organisations of an enterprise, by organisation id (the documented listing, paged)."""
        path = f"/organization-management/v1/enterprises/{quote(enterprise_id, safe='')}/organizations"
        children: dict[str, ChildOrganization] = {}
        for page in self._pages(ENTERPRISE_ORGANIZATIONS, path, [], decode_child_organizations_page):
            for child in page:
                children.setdefault(child.id, child)
        return children

    def platform_usage(self) -> list[FeatureUsage]:
        """Current-month Cast AI platform usage per feature."""
        body = self._session.get(PLATFORM_USAGE, "/v1/billing/platform-usage-report")
        return self._session.decoded(PLATFORM_USAGE, None, decode_platform_usage, body)

    def _pages(
        self,
        endpoint: str,
        path: str,
        params: Sequence[tuple[str, str]],
        decode_page: Callable[[bytes], tuple[T, str | None]],
        cluster_id: str | None = None,
        json_body: bytes | None = None,
    ) -> Iterator[T]:
        return paginate(
            self._session,
            endpoint,
            path,
            params,
            decode_page,
            page_limit=self._page_limit,
            max_pages=self._max_pages,
            cluster_id=cluster_id,
            json_body=json_body,
        )
