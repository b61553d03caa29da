"""The Go exporter's objects (`-HH`) and our stale objects of a day: refuse, replace or delete them."""

from __future__ import annotations

import re
import tempfile
from typing import Any

from castai_focus_dagster.storage.keys import DATA_FORMATS, partition_object_prefix
from castai_focus_dagster.storage.publish_model import ForeignObjectRefused, PublishRequest
from castai_focus_dagster.storage.serialize import written_by_this_exporter
from castai_focus_dagster.storage.store_base import ObjectStore

# The part of a data object name after partition_object_prefix(): the hour and the format.
DATA_OBJECT_SUFFIX = re.compile(rf"^(\d{{2}})\.({'|'.join(DATA_FORMATS)})$")


def foreign_hour_zero(
    store: ObjectStore, trees: list[str], current: Any, req: PublishRequest, replace_them: bool
) -> list[str]:
    """The day's `-00` objects (either format, every tree) that are not ours, or refuse them.

    Ours: listed by the published manifest, or marked by our writer (a manifest can be lost). Anything
    else under that name was written by the Go exporter's run at hour 00: publishing overwrites it (same
    format) or deletes it (the other format), so that needs the operator's choice.
    """
    files = current.get("files") if isinstance(current, dict) else None
    listed = {e.get("key") for e in files if isinstance(e, dict)} if isinstance(files, list) else set()
    foreign: list[str] = []
    for tree in trees:
        object_prefix = partition_object_prefix(tree, req.organization_id, req.day)
        for key in sorted(store.list(object_prefix)):
            match = DATA_OBJECT_SUFFIX.match(key[len(object_prefix) :])
            if (
                match
                and match.group(1) == "00"
                and key not in listed
                and not marked_ours(store, key, match[2])
            ):
                foreign.append(key)
    if foreign and not replace_them:
        raise ForeignObjectRefused(
            f"{req.day}: {', '.join(store.describe(k) for k in foreign)} is not this exporter's (no manifest "
            "of ours lists it and it carries no mark of our writer): the Go exporter's run at hour 00 wrote "
            "this key. Publishing would overwrite or delete it, so nothing was written. Move it away, or set "
            "DELETE_LEGACY_HOURLY_OBJECTS=true to let publication replace the Go exporter's objects"
        )
    return foreign


def marked_ours(store: ObjectStore, key: str, fmt: str) -> bool:
    with tempfile.TemporaryFile() as local:  # streamed: a day's object never enters memory whole
        store.get_file(key, local)
        local.seek(0)
        return written_by_this_exporter(local, fmt)


def delete_stale_data_objects(
    store: ObjectStore, tree: str, req: PublishRequest, keep: str, delete_legacy_hourly: bool
) -> tuple[list[str], list[str]]:
    """(our deleted other-format objects, the Go exporter's hour objects) of this organisation's day.

    Hour `00` is ours (daily partitions); hours `01`-`23` can only come from the Go exporter, which
    wrote one object per run: they are deleted only when the operator chose it.
    """
    object_prefix = partition_object_prefix(tree, req.organization_id, req.day)
    ours: list[str] = []
    legacy: list[str] = []
    for key in sorted(store.list(object_prefix)):
        match = DATA_OBJECT_SUFFIX.match(key[len(object_prefix) :])
        if key == keep or not match:
            continue
        if match.group(1) == "00":
            ours.append(key)
            store.delete(key)
        else:
            legacy.append(key)
            if delete_legacy_hourly:
                store.delete(key)
    return ours, legacy
