"""Dagster resources: the Cast AI API and the output store, both configured from the environment.

Settings are read and validated when a run starts (never at import), so a code server loads even
before secrets exist, and a bad configuration fails the run with one message listing every problem.
The two secrets arrive through `dg.EnvVar`, so the UI and run config show only the variable name.
"""

import logging
import math
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from castai_focus_dagster.castai.client import CastAIClient
from castai_focus_dagster.settings import Settings, load_settings
from castai_focus_dagster.storage.object_store import (
    ObjectStore,
    ObjectStoreError,
    object_store_from_settings,
)
from castai_focus_dagster.storage.ownership import check_prefix_owner
from castai_focus_dagster.storage.publish_model import PrefixOwnedError

CASTAI_POOL = "castai_api"
# Each run paces its requests 2% slower than its share, so 20 ms of jitter between the client and
# Cast AI cannot bring two runs' requests into the same 1-second window beyond the budget.
PACING_GUARD = 0.02


def castai_pool_slots(instance: dg.DagsterInstance | None) -> int | None:
    """Slots of the `castai_api` pool on this instance; None when the instance enforces no limit."""
    if instance is None or not instance.event_log_storage.supports_global_concurrency_limits:
        return None
    limit = instance.event_log_storage.get_concurrency_info(CASTAI_POOL).limit
    return limit if limit and limit > 0 else None


def run_rate_limit(budget: float, slots: int | None) -> float:
    """This run's share of the organisation's Cast AI budget, in requests per second.

    At most `slots` steps call Cast AI at once (one pool slot each); each paces its requests evenly at
    ⌊budget / slots⌋, so together they send at most slots × ⌊budget / slots⌋ ≤ budget requests in
    any 1-second window. Below one request per second per slot the share is budget / slots (the
    budget then holds on average). No limit on the instance: this run is taken to be the only one.
    """
    per_slot = budget / (slots or 1)
    share = math.floor(per_slot) if per_slot >= 1 else per_slot
    return share / (1 + PACING_GUARD)


def exporter_settings(**secret_overrides: str) -> Settings:
    """Validated settings from the environment; non-empty overrides (resolved EnvVars) take precedence."""
    env = dict(os.environ)
    env.update({k: v for k, v in secret_overrides.items() if v})
    return load_settings(env)


class CastAIResource(dg.ConfigurableResource):
    """Cast AI API client for one run, against the API at `CASTAI_API_URL`."""

    api_key: str = ""

    _settings: Settings | None = PrivateAttr(default=None)
    _client: CastAIClient | None = PrivateAttr(default=None)

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator["CastAIResource"]:
        settings = exporter_settings(CASTAI_API_KEY=self.api_key)
        logger = context.log if context.log is not None else logging.getLogger(__name__)
        with ExitStack() as stack:
            settings, base_url = self._api(settings, stack, _as_logger(logger))
            slots = castai_pool_slots(context.instance)
            rate = run_rate_limit(settings.castai_rate_limit_rps, slots)
            logger.info(
                f"Cast AI budget {settings.castai_rate_limit_rps:g} requests/s over "
                + (f"{slots} {CASTAI_POOL} slot(s)" if slots else f"this run alone (no {CASTAI_POOL} limit)")
                + f": this run sends at most {rate:.2f} requests/s"
            )
            client = CastAIClient.from_settings(
                settings, base_url, _as_logger(logger), rate_limit_rps=rate, rate_limit_burst=1
            )
            stack.callback(client.close)
            self._settings, self._client = settings, client
            yield self

    def _api(
        self, settings: Settings, stack: ExitStack, logger: logging.Logger
    ) -> tuple[Settings, str | None]:
        """The settings and base URL the client uses (None: the configured `CASTAI_API_URL`)."""
        if settings.is_sandbox:  # the location was loaded for a real API, the run asks for the sandbox
            raise dg.Failure(description=_WRONG_RESOURCE.format(url="sandbox"), allow_retries=False)
        return settings, None

    @property
    def settings(self) -> Settings:
        assert self._settings is not None, "resource used outside a run"
        return self._settings

    @property
    def client(self) -> CastAIClient:
        assert self._client is not None, "resource used outside a run"
        return self._client


class SandboxCastAIResource(CastAIResource):
    """`CASTAI_API_URL=sandbox`: the run starts the built-in simulated organisation and reads it."""

    def _api(
        self, settings: Settings, stack: ExitStack, logger: logging.Logger
    ) -> tuple[Settings, str | None]:
        if not settings.is_sandbox:  # never answer a real API's run with simulated costs
            raise dg.Failure(description=_WRONG_RESOURCE.format(url="a real API"), allow_retries=False)
        from castai_focus_dagster.castai.sandbox import SandboxOrg, SandboxServer

        org = SandboxOrg.generate(seed=7)
        server = stack.enter_context(SandboxServer(org))
        logger.info(f"Cast AI sandbox serving the demo organisation at {server.url}")
        return settings.model_copy(update={"castai_api_key": _secret(org.api_key)}), server.url


_WRONG_RESOURCE = (
    "CASTAI_API_URL names {url}, but the code location was loaded with another CASTAI_API_URL "
    "(definitions.py chooses the Cast AI resource when it loads): reload the code location"
)


class FocusStorageResource(dg.ConfigurableResource):
    """Where FOCUS data, metadata and intermediates go: S3 (`S3_BUCKET`) or `LOCAL_OUTPUT_DIR`."""

    s3_secret_access_key: str = ""

    _settings: Settings | None = PrivateAttr(default=None)
    _store: ObjectStore | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._settings = exporter_settings(S3_SECRET_ACCESS_KEY=self.s3_secret_access_key)
        self._store = object_store_from_settings(self._settings)
        # Before any write: a missing bucket, a read-only folder or another organisation's prefix
        # fail the run now, with what to fix, and are not retried.
        try:
            self._store.check_writable()
            check_prefix_owner(self._store, self._settings.s3_prefix, self._settings.organization_id)
        except (ObjectStoreError, PrefixOwnedError) as exc:
            if isinstance(exc, ObjectStoreError) and not exc.permanent:
                raise
            raise dg.Failure(description=str(exc), allow_retries=False) from None

    @property
    def settings(self) -> Settings:
        assert self._settings is not None, "resource used outside a run"
        return self._settings

    @property
    def store(self) -> ObjectStore:
        assert self._store is not None, "resource used outside a run"
        return self._store


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


def _as_logger(log: Any) -> logging.Logger:
    """Dagster's DagsterLogManager quacks like a Logger; the client only calls debug/info/warning."""
    return log
