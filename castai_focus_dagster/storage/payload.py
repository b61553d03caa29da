"""The serialized object to publish: bytes, or a seekable file for days too large for memory."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from castai_focus_dagster.storage.store_base import ObjectStore

# The serialized object: in memory, or a seekable binary file (large days never enter memory whole).
Payload = bytes | BinaryIO
_HASH_CHUNK = 1 << 20


def payload_size(data: Payload) -> int:
    if isinstance(data, bytes):
        return len(data)
    return data.seek(0, 2)


def payload_sha256(data: Payload) -> str:
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    data.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: data.read(_HASH_CHUNK), b""):
        digest.update(chunk)
    data.seek(0)  # rewound for the next reader (the audit)
    return digest.hexdigest()


def upload(store: ObjectStore, key: str, data: Payload, content_type: str) -> None:
    if isinstance(data, bytes):
        store.put(key, data, content_type)
    else:
        data.seek(0)
        store.put_file(key, data, content_type)


@contextmanager
def read_back(store: ObjectStore, key: str, like: Payload) -> Iterator[Payload]:
    """The stored object as the same kind of payload as the uploaded one (a file: `store.open_file`)."""
    if isinstance(like, bytes):
        yield store.get(key)
        return
    with store.open_file(key) as staged:
        yield staged
