"""The object store the exporter writes to: S3, or a local folder with the same key space.

The contract and its errors live in store_base.py, the back-ends in local_store.py and s3_store.py;
this module names them together and picks one from the settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from castai_focus_dagster.settings import Settings
from castai_focus_dagster.storage.local_store import STALE_TMP_SECONDS, TMP_DIR, LocalObjectStore
from castai_focus_dagster.storage.s3_store import S3ObjectStore, s3_client_from_settings
from castai_focus_dagster.storage.store_base import (
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    PreconditionFailed,
)

__all__ = [
    "STALE_TMP_SECONDS",
    "TMP_DIR",
    "LocalObjectStore",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreError",
    "PreconditionFailed",
    "S3ObjectStore",
    "object_store_from_settings",
    "s3_client_from_settings",
]


def object_store_from_settings(
    settings: Settings, s3_client_factory: Callable[[], Any] | None = None
) -> ObjectStore:
    """S3 when `S3_BUCKET` is set, else the local folder `LOCAL_OUTPUT_DIR` with the same key layout."""
    if settings.s3_bucket:
        client = s3_client_factory() if s3_client_factory else s3_client_from_settings(settings)
        return S3ObjectStore(client, settings.s3_bucket, settings.s3_region)
    return LocalObjectStore(settings.local_output_dir)
