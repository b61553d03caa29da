"""One prefix holds one organisation: its marker, written at the first publication, says which."""

from __future__ import annotations

import json

from castai_focus_dagster.storage.keys import FOCUS_VERSION, manifest_dir, organization_marker_key
from castai_focus_dagster.storage.metadata import canonical_json
from castai_focus_dagster.storage.publish_model import JSON_CONTENT_TYPE, PrefixOwnedError, read_json
from castai_focus_dagster.storage.store_base import ObjectNotFound, ObjectStore, PreconditionFailed


def _prefix_owner(store: ObjectStore, prefix: str) -> tuple[str | None, str]:
    """The organisation a prefix belongs to and where that is recorded (marker, else a manifest)."""
    marker = organization_marker_key(prefix)
    try:
        raw = store.get(marker)
    except ObjectNotFound:
        raw = None
    if raw is not None:
        try:
            owner = json.loads(raw)["organizationId"]
        except (ValueError, KeyError, TypeError):
            raise PrefixOwnedError(
                f"{store.describe(marker)} is not a valid organisation marker (expected JSON with "
                "organizationId); restore it or delete it so the next run records this organisation"
            ) from None
        return str(owner), store.describe(marker)
    # A prefix published before markers existed: its manifests name the organisation.
    for key in store.list(manifest_dir(prefix)):
        manifest = read_json(store, key)
        if isinstance(manifest, dict) and isinstance(manifest.get("organizationId"), str):
            return manifest["organizationId"], store.describe(key)
    return None, ""


def check_prefix_owner(store: ObjectStore, prefix: str, organization_id: str) -> bool:
    """Refuse a prefix that holds another organisation's export; True when the marker already exists."""
    owner, where = _prefix_owner(store, prefix)
    if owner is not None and owner != organization_id:
        raise PrefixOwnedError(
            f"S3_PREFIX {prefix!r} holds the FOCUS export of Cast AI organisation {owner} "
            f"(recorded in {where}), but CASTAI_ORGANIZATION_ID is {organization_id}. One S3_PREFIX holds "
            f"one organisation (two would make every total count twice); nothing was written. Set S3_PREFIX "
            f"to a new prefix for {organization_id}; or, if {owner} was a mistake, delete its objects under "
            f"the prefix (castai-focus-{owner}-* data files, the manifests under "
            f"{store.describe(manifest_dir(prefix).rstrip('/'))}/ and "
            f"{store.describe(organization_marker_key(prefix))}) "
            f"and re-run; the next publication drops {owner}'s entries from the metadata documents "
            "(schema.json, dataset-instance.json, recency.json)."
        )
    return owner is not None and where == store.describe(organization_marker_key(prefix))


def claim_prefix(store: ObjectStore, prefix: str, organization_id: str) -> None:
    """Record the prefix's organisation at its first publication (conditional: first writer wins)."""
    if check_prefix_owner(store, prefix, organization_id):
        return
    document = {"organizationId": organization_id, "focusVersion": FOCUS_VERSION}
    try:
        store.put_if(organization_marker_key(prefix), canonical_json(document), JSON_CONTENT_TYPE, None)
    except PreconditionFailed:
        check_prefix_owner(store, prefix, organization_id)  # written meanwhile: by this organisation?
