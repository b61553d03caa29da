"""The object-store contract write-audit-publish needs, and its errors (no back-end code here)."""

from __future__ import annotations

from typing import BinaryIO, Protocol, runtime_checkable


class ObjectNotFound(KeyError):
    """The key does not exist. A KeyError, so callers can treat the store like a mapping."""

    def __str__(self) -> str:  # KeyError would repr() the message and add quotes
        return str(self.args[0]) if self.args else "object not found"


class ObjectStoreError(RuntimeError):
    """A store operation failed; the message names the operation and the object (never credentials).

    `permanent`: retrying cannot help (missing bucket, access denied, full disk, read-only folder).
    """

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class PreconditionFailed(ObjectStoreError):
    """A conditional write found the object in another version than the one expected."""


@runtime_checkable
class ObjectStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def get(self, key: str) -> bytes: ...

    def put_file(self, key: str, source: BinaryIO, content_type: str) -> None:
        """Store the rest of `source` (read from its current position) under `key`, streaming."""
        ...

    def get_file(self, key: str, sink: BinaryIO) -> None:
        """Write the object into `sink`, streaming; ObjectNotFound when it does not exist."""
        ...

    def open_file(self, key: str) -> BinaryIO:
        """A seekable binary file holding the object's bytes (the caller closes it): the stored file
        itself where the store is a folder, a downloaded temporary file otherwise; ObjectNotFound when
        it does not exist."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...

    def delete(self, key: str) -> None: ...

    def copy(self, src: str, dst: str) -> None: ...

    def describe(self, key: str) -> str: ...

    def version(self, key: str) -> str | None:
        """An opaque token that changes whenever the object is rewritten (S3: its ETag); None if absent."""
        ...

    def put_if(self, key: str, data: bytes, content_type: str, expected: str | None) -> None:
        """Put only if the object is still at version `expected` (None: still absent); else
        PreconditionFailed."""
        ...

    def check_writable(self) -> None:
        """Fail now, naming the bucket or folder, when nothing could be written (checked at start)."""
        ...


def put_after_version_check(
    store: ObjectStore, key: str, data: bytes, content_type: str, expected: str | None
) -> None:
    """Put `data` only while `key` still holds version `expected` (None: no object); else PreconditionFailed.

    Atomic only under the caller's own exclusion (the local store's lock); on S3 it is the fallback for
    stores that reject conditional PutObject.
    """
    current = store.version(key)
    if current != expected:
        raise PreconditionFailed(
            f"{store.describe(key)} changed while this run was publishing "
            f"(expected {'no object' if expected is None else 'version ' + expected}, "
            f"found {'no object' if current is None else 'version ' + current})"
        )
    store.put(key, data, content_type)
