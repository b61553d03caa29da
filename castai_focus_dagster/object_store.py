"""Minimal object store (S3 or a local folder) with the few operations write-audit-publish needs.

Both back-ends expose the same key space ("/"-separated keys), so the local folder is a faithful stand-in
for the bucket: a demo or test writes exactly the keys production writes. No Dagster import here; the
Dagster IO manager wraps these classes.

`put_file` / `get_file` move an object between the store and a local binary file without holding it in
memory: a day of a large organisation is hundreds of MB, and memory must not grow with the organisation.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from castai_focus_dagster.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Temporary files of LocalObjectStore.put are ".<name>.<random>.tmp" next to the target; list() hides them.
_TMP_SUFFIX = ".tmp"
_S3_TOTAL_ATTEMPTS = 5  # first try + 4 retries (standard mode: capped exponential backoff, jitter)
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_COPY_CHUNK = 1 << 20
# Multipart above 64 MiB: parts of 64 MiB keep memory small and a FOCUS day far below 10,000 parts.
_S3_TRANSFER = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20, max_concurrency=4)


class ObjectNotFound(KeyError):
    """The key does not exist. A KeyError, so callers can treat the store like a mapping."""

    def __str__(self) -> str:  # KeyError would repr() the message and add quotes
        return str(self.args[0]) if self.args else "object not found"


class ObjectStoreError(RuntimeError):
    """A store operation failed; the message names the operation and the object (never credentials)."""


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

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...

    def delete(self, key: str) -> None: ...

    def copy(self, src: str, dst: str) -> None: ...

    def describe(self, key: str) -> str: ...


class LocalObjectStore:
    """Objects as files under `root`; each put is atomic (temp file in the same folder + os.replace).

    A reader therefore sees either the previous object or the complete new one, never a partial file,
    which is the same guarantee S3 gives for a PUT.
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid object key {key!r}: empty, absolute or '.'/'..' segment")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._write(self._path(key), lambda handle: handle.write(data))

    def put_file(self, key: str, source: BinaryIO, content_type: str) -> None:
        self._write(self._path(key), lambda handle: shutil.copyfileobj(source, handle, _COPY_CHUNK))

    def _write(self, path: Path, fill: Callable[[BinaryIO], object]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                fill(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; published files are meant to be read by others
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object at {path}") from None

    def get_file(self, key: str, sink: BinaryIO) -> None:
        path = self._path(key)
        try:
            with path.open("rb") as source:
                shutil.copyfileobj(source, sink, _COPY_CHUNK)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object at {path}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        """Keys starting with `prefix` (a plain string prefix, as in S3), sorted."""
        folder = prefix.rpartition("/")[0]
        base = self._path(folder) if folder else self.root
        if not base.is_dir():
            return []
        keys = []
        for dirpath, _dirnames, filenames in os.walk(base):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith(".") and name.endswith(_TMP_SUFFIX):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        """Idempotent like S3 DELETE; prunes folders left empty so staging leaves no trace."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:  # not empty (or already gone): stop pruning
                break
            parent = parent.parent

    def copy(self, src: str, dst: str) -> None:
        self._write(self._path(dst), lambda handle: self.get_file(src, handle))

    def describe(self, key: str) -> str:
        return str(self._path(key))


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class S3ObjectStore:
    """Objects in one bucket through a boto3 S3 client.

    Uploads carry a SHA-256 checksum that S3 verifies before storing the object, so a corrupted upload
    is rejected instead of published. Copies are server-side and atomic (objects up to 5 GiB; a daily
    FOCUS partition of one organisation is far below that).
    """

    def __init__(self, client: S3Client, bucket: str):
        if not bucket:
            raise ValueError("S3ObjectStore needs a bucket name")
        self.client = client
        self.bucket = bucket

    def __repr__(self) -> str:
        return f"S3ObjectStore(bucket={self.bucket!r})"

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _failure(self, operation: str, key: str, exc: Exception) -> ObjectStoreError:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            reason = f"{error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")
        else:
            reason = f"{type(exc).__name__}: {exc}"
        return ObjectStoreError(f"S3 {operation} {self.describe(key)} failed ({reason})")

    @staticmethod
    def _is_missing(exc: ClientError) -> bool:
        return str(exc.response.get("Error", {}).get("Code")) in _MISSING_CODES

    def put(self, key: str, data: bytes, content_type: str) -> None:
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, ChecksumSHA256=checksum
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._failure("PutObject", key, exc) from exc

    def get(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            return response["Body"].read()
        except ClientError as exc:
            if self._is_missing(exc):
                raise ObjectNotFound(f"no object at {self.describe(key)}") from None
            raise self._failure("GetObject", key, exc) from exc
        except BotoCoreError as exc:
            raise self._failure("GetObject", key, exc) from exc

    def put_file(self, key: str, source: BinaryIO, content_type: str) -> None:
        """Managed (multipart above 64 MiB) upload; S3 verifies the SHA-256 of every part."""
        try:
            self.client.upload_fileobj(
                source,
                self.bucket,
                key,
                ExtraArgs={"ContentType": content_type, "ChecksumAlgorithm": "SHA256"},
                Config=_S3_TRANSFER,
            )
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise self._failure("PutObject", key, exc) from exc

    def get_file(self, key: str, sink: BinaryIO) -> None:
        try:
            self.client.download_fileobj(self.bucket, key, sink, Config=_S3_TRANSFER)
        except ClientError as exc:
            if self._is_missing(exc):
                raise ObjectNotFound(f"no object at {self.describe(key)}") from None
            raise self._failure("GetObject", key, exc) from exc
        except BotoCoreError as exc:
            raise self._failure("GetObject", key, exc) from exc

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if self._is_missing(exc):
                return False
            raise self._failure("HeadObject", key, exc) from exc
        except BotoCoreError as exc:
            raise self._failure("HeadObject", key, exc) from exc
        return True

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                keys.extend(item["Key"] for item in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise self._failure("ListObjectsV2", prefix, exc) from exc
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._failure("DeleteObject", key, exc) from exc

    def copy(self, src: str, dst: str) -> None:
        try:
            self.client.copy_object(
                Bucket=self.bucket, Key=dst, CopySource={"Bucket": self.bucket, "Key": src}
            )
        except ClientError as exc:
            if self._is_missing(exc):
                raise ObjectNotFound(f"no object at {self.describe(src)} (copy to {dst})") from None
            raise self._failure(f"CopyObject {self.describe(src)} ->", dst, exc) from exc
        except BotoCoreError as exc:
            raise self._failure(f"CopyObject {self.describe(src)} ->", dst, exc) from exc


def s3_client_from_settings(settings: Settings) -> S3Client:
    """A boto3 S3 client for the configured bucket.

    Plain boto3 rather than `dagster_aws.s3.S3Resource(...).get_client()`: importing dagster_aws pulls in
    all of dagster (about a second, and this module must stay Dagster-free), and S3Resource adds nothing
    we need beyond what is set here: region, endpoint, optional static keys, standard-mode retries.
    Without static keys boto3 uses its default credential chain, which picks up IRSA on EKS.
    """
    secret = settings.s3_secret_access_key.get_secret_value()
    session = boto3.session.Session(
        aws_access_key_id=settings.s3_access_key_id or None,
        aws_secret_access_key=secret or None,
        region_name=settings.s3_region or None,
    )
    config = Config(
        retries={"mode": "standard", "total_max_attempts": _S3_TOTAL_ATTEMPTS},
        # S3-compatible servers (MinIO, Ceph, moto) usually lack virtual-host DNS for buckets.
        s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
    )
    return session.client("s3", endpoint_url=settings.s3_endpoint_url or None, config=config)


def object_store_from_settings(
    settings: Settings, s3_client_factory: Callable[[], Any] | None = None
) -> ObjectStore:
    """S3 when `S3_BUCKET` is set, else the local folder `LOCAL_OUTPUT_DIR` with the same key layout."""
    if settings.s3_bucket:
        client = s3_client_factory() if s3_client_factory else s3_client_from_settings(settings)
        return S3ObjectStore(client, settings.s3_bucket)
    return LocalObjectStore(settings.local_output_dir)
