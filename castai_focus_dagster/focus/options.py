"""The configuration the FOCUS transform needs, decoupled from how settings are loaded."""

from __future__ import annotations

from dataclasses import dataclass

from castai_focus_dagster.settings import Settings


@dataclass(frozen=True)
class FocusOptions:
    """What the transform reads from the configuration; schema constants name these fields."""

    organization_id: str  # the configured organisation: BillingAccountId of clusters that name none
    billing_account_name: str  # FOCUS_BILLING_ACCOUNT_NAME; empty: each row's BillingAccountId
    billing_currency: str = "USD"
    service_provider_name: str = "CAST AI"
    invoice_issuer_name: str = "CAST AI"
    publisher_name: str = "Cast AI"
    service_name: str = "Kubernetes"
    tag_allowlist: tuple[str, ...] = ()
    enterprise_id: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> FocusOptions:
        return cls(
            organization_id=settings.organization_id,
            billing_account_name=settings.focus_billing_account_name,
            billing_currency=settings.focus_billing_currency,
            service_provider_name=settings.focus_service_provider_name,
            invoice_issuer_name=settings.focus_invoice_issuer_name,
            publisher_name=settings.focus_publisher_name,
            service_name=settings.focus_service_name,
            tag_allowlist=settings.focus_tag_allowlist,
            enterprise_id=settings.focus_enterprise_id,
        )
