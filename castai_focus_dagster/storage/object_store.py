"""Minimal object store (S3 or a local folder) with the few operations write-audit-publish needs.

Both back-ends expose the same key space ("/"-separated keys), so the local folder is a faithful stand-in
for the bucket: a demo or test writes exactly the keys production writes. No Dagster import here; the
Dagster IO manager wraps these classes.

`put_file` / `get_file` move an object between the store and a local binary file without holding it in
memory: a day of a large organisation is hundreds of MB, and memory must not grow with the organisation.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

# Temporary files of LocalObjectStore.put live in this folder at the root of the store, outside every
# key a consumer reads (never next to the target inside version=focus-1.3/); list() skips it.
TMP_DIR = ".castai-focus-tmp"
_TMP_SUFFIX = ".tmp"
_LOCK_NAME = "publish.lock"
# A temporary file untouched for this long belongs to a dead writer (a live one writes continuously).
STALE_TMP_SECONDS = 3600
# OS errors that no retry can heal: full disk or quota, read-only or forbidden folder.
_PERMANENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
# S3 error codes that no retry can heal: the bucket, the credentials or the permissions are wrong.
_PERMANENT_S3_CODES = {
    "NoSuchBucket",
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidBucketName",
    "AccountProblem",
    "PermanentRedirect",  # the bucket is in another region than the client's
}
# HeadBucket has no body: a bucket in another region answers a bare 301 (PermanentRedirect elsewhere).
_REDIRECT_CODES = {"301", "PermanentRedirect"}
_PRECONDITION_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
# What S3-compatible stores without conditional writes answer to If-Match / If-None-Match on PutObject.
_UNSUPPORTED_CONDITION_CODES = {"NotImplemented", "501", "InvalidArgument"}
_log = logging.getLogger(__name__)
_WARNED_NO_CONDITIONS: set[str] = set()  # buckets already warned about, once per process
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


class LocalObjectStore:
    """Objects as files under `root`; each put is atomic (temp file in the same folder + os.replace).

    A reader therefore sees either the previous object or the complete new one, never a partial file,
    which is the same guarantee S3 gives for a PUT.
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).resolve()
        self.tmp_dir = self.root / TMP_DIR

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == TMP_DIR:
            raise ValueError(f"invalid object key {key!r}: empty, absolute, '.'/'..' or temporary segment")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._write(self._path(key), lambda handle: handle.write(data))

    def put_file(self, key: str, source: BinaryIO, content_type: str) -> None:
        self._write(self._path(key), lambda handle: shutil.copyfileobj(source, handle, _COPY_CHUNK))

    def _write(self, path: Path, fill: Callable[[BinaryIO], object]) -> None:
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            # Same file system as the target (os.replace stays atomic), outside the data tree.
            fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.", suffix=_TMP_SUFFIX, dir=self.tmp_dir)
            with os.fdopen(fd, "wb") as handle:
                fill(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; published files are meant to be read by others
            for attempt in range(3):
                try:
                    os.replace(tmp, path)
                    break
                except FileNotFoundError:  # a concurrent delete pruned the folder just made empty
                    if attempt == 2:
                        raise
                    path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            if exc.errno in _PERMANENT_ERRNOS:
                raise ObjectStoreError(
                    f"cannot write {path}: {os.strerror(exc.errno or 0)} (errno {exc.errno})", permanent=True
                ) from exc
            raise
        except BaseException:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    def version(self, key: str) -> str | None:
        """Inode, size and modification time: every put replaces the file, hence a new inode."""
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"

    def put_if(self, key: str, data: bytes, content_type: str, expected: str | None) -> None:
        """Compare and replace under an exclusive lock shared by every process on this host."""
        with self._lock():
            _put_after_version_check(self, key, data, content_type, expected)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        with open(self.tmp_dir / _LOCK_NAME, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def check_writable(self) -> None:
        """Create the folder and a probe file in it: a read-only or full folder fails here, at start."""
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.tmp_dir) as probe:
                probe.write(b"probe")
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as exc:
            raise ObjectStoreError(
                f"LOCAL_OUTPUT_DIR {self.root} is not writable: {os.strerror(exc.errno or 0)} "
                f"(errno {exc.errno})",
                permanent=exc.errno in _PERMANENT_ERRNOS,
            ) from exc

    def remove_stale_temporary(
        self, folders: tuple[str, ...] = (), max_age_seconds: float = STALE_TMP_SECONDS
    ) -> list[str]:
        """Delete temporary files that no writer touched for `max_age_seconds` (a killed run's).

        `folders` (keys ending in "/") are also swept for the hidden `.<name>.<random>.tmp` files that
        older versions wrote next to their targets.
        """
        removed: list[str] = []
        deadline = time.time() - max_age_seconds
        candidates = list(self.tmp_dir.iterdir()) if self.tmp_dir.is_dir() else []
        for folder in folders:
            base = self._path(folder.rstrip("/"))
            if base.is_dir():
                candidates += [p for p in base.iterdir() if p.name.startswith(".")]
        for path in candidates:
            if path.name.endswith(_TMP_SUFFIX) and path.is_file():
                try:
                    if path.stat().st_mtime < deadline:
                        path.unlink()
                        removed.append(str(path))
                except FileNotFoundError:
                    continue
        return removed

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
        for dirpath, dirnames, filenames in os.walk(base):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            if rel == ".":
                dirnames[:] = [d for d in dirnames if d != TMP_DIR]
            for name in filenames:
                if name.startswith(".") and name.endswith(_TMP_SUFFIX):
                    continue  # a temporary file of an older version, written next to its target
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


def _put_after_version_check(
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

    def __init__(self, client: S3Client, bucket: str, region: str = ""):
        """`region`: the configured S3_REGION (empty: boto3's default chain chose one), for messages."""
        if not bucket:
            raise ValueError("S3ObjectStore needs a bucket name")
        self.client = client
        self.bucket = bucket
        self.region = region
        # False once the store rejected a conditional PutObject: later writes check, then put.
        self.conditional_writes = True

    def __repr__(self) -> str:
        return f"S3ObjectStore(bucket={self.bucket!r})"

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _failure(self, operation: str, key: str, exc: Exception) -> ObjectStoreError:
        code = ""
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "?"))
            reason = f"{code}: {error.get('Message', '')}".rstrip(": ")
        else:
            reason = f"{type(exc).__name__}: {exc}"
            # boto3's managed transfers wrap the ClientError in a message: look for the code in it.
            code = next((c for c in _PERMANENT_S3_CODES if f"({c})" in str(exc)), "")
        permanent = code in _PERMANENT_S3_CODES
        hint = f" [bucket {self.bucket}: permanent, not retried]" if permanent else ""
        return ObjectStoreError(
            f"S3 {operation} {self.describe(key)} failed ({reason}){hint}", permanent=permanent
        )

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

    def version(self, key: str) -> str | None:
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if self._is_missing(exc):
                return None
            raise self._failure("HeadObject", key, exc) from exc
        except BotoCoreError as exc:
            raise self._failure("HeadObject", key, exc) from exc
        return str(response["ETag"])

    def put_if(self, key: str, data: bytes, content_type: str, expected: str | None) -> None:
        """A conditional PutObject: `If-Match: <ETag>`, or `If-None-Match: *` when the object must not exist.

        AWS S3 evaluates the condition atomically with the write. A store that ignores the headers
        writes unconditionally: the caller's own version checks before and after are then the guard.
        A store that rejects them (501 NotImplemented, 400 InvalidArgument) gets the same treatment
        explicitly: the version is compared here, then the object is put unconditionally (warned once).
        """
        if not self.conditional_writes:
            _put_after_version_check(self, key, data, content_type, expected)
            return
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                ChecksumSHA256=checksum,
                **condition,  # type: ignore[arg-type]
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            # If-Match on a key deleted meanwhile: S3 answers 404 NoSuchKey, not 412.
            if code in _PRECONDITION_CODES or (expected is not None and code in _MISSING_CODES):
                raise PreconditionFailed(
                    f"{self.describe(key)} changed while this run was publishing "
                    f"(conditional PutObject {next(iter(condition))} refused)"
                ) from None
            if str(exc.response.get("Error", {}).get("Code")) in _UNSUPPORTED_CONDITION_CODES:
                self.conditional_writes = False
                if self.bucket not in _WARNED_NO_CONDITIONS:
                    _WARNED_NO_CONDITIONS.add(self.bucket)
                    _log.warning(
                        "S3 bucket %s rejected a conditional PutObject (%s) on %s: this store does not "
                        "support If-Match / If-None-Match; manifest, lease and marker writes fall back to a "
                        "version check before and after an unconditional put (two runs of one day reaching "
                        "the lease in the same instant are then kept apart only by the run queue)",
                        self.bucket,
                        code,
                        self.describe(key),
                    )
                _put_after_version_check(self, key, data, content_type, expected)
                return
            raise self._failure("PutObject", key, exc) from exc
        except BotoCoreError as exc:
            raise self._failure("PutObject", key, exc) from exc

    def check_writable(self) -> None:
        """HeadBucket: a missing bucket or missing permissions fail at start, not at the first PutObject."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise ObjectStoreError(
                    f"S3 bucket {self.bucket} does not exist (HeadBucket: {code}, NoSuchBucket); "
                    "create it or fix S3_BUCKET",
                    permanent=True,
                ) from None
            if code in _REDIRECT_CODES:
                raise ObjectStoreError(self._wrong_region(exc, code), permanent=True) from None
            if code in ("403", "AccessDenied", "Forbidden"):
                raise ObjectStoreError(
                    f"S3 bucket {self.bucket}: access denied (HeadBucket: {code}); check the credentials "
                    "and the bucket policy (s3:ListBucket)",
                    permanent=True,
                ) from None
            raise self._failure("HeadBucket", "", exc) from exc
        except BotoCoreError as exc:
            raise self._failure("HeadBucket", "", exc) from exc

    def _wrong_region(self, exc: ClientError, code: str) -> str:
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        actual = headers.get("x-amz-bucket-region", "")
        configured = (
            f"S3_REGION={self.region}"
            if self.region
            else f"S3_REGION is unset (the client used {self.client.meta.region_name or 'no region'})"
        )
        where = f"is in region {actual}" if actual else "is in another region"
        fix = f"set S3_REGION={actual}" if actual else "set S3_REGION to the bucket's region"
        return (
            f"S3 bucket {self.bucket} {where} (HeadBucket: {code}, PermanentRedirect) but {configured}; "
            f"{fix} (or S3_ENDPOINT_URL to that region's endpoint)"
        )

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
        return S3ObjectStore(client, settings.s3_bucket, settings.s3_region)
    return LocalObjectStore(settings.local_output_dir)
