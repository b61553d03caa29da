"""The object store as one S3 bucket (boto3); every S3 error is translated in one place."""

from __future__ import annotations

import base64
import hashlib
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from castai_focus_dagster.settings import Settings
from castai_focus_dagster.storage.store_base import (
    ObjectNotFound,
    ObjectStoreError,
    PreconditionFailed,
    put_after_version_check,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

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
# Multipart above 64 MiB: parts of 64 MiB keep memory small and a FOCUS day far below 10,000 parts.
_S3_TRANSFER = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20, max_concurrency=4)


def _wrapped_client_error(exc: BaseException) -> ClientError | None:
    """The ClientError behind `exc` (its cause or the error it was raised while handling), if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ClientError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


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
            # boto3's managed transfers re-raise a ClientError as S3UploadFailedError inside its handler.
            wrapped = _wrapped_client_error(exc)
            code = str(wrapped.response.get("Error", {}).get("Code", "")) if wrapped is not None else ""
        permanent = code in _PERMANENT_S3_CODES
        hint = f" [bucket {self.bucket}: permanent, not retried]" if permanent else ""
        return ObjectStoreError(
            f"S3 {operation} {self.describe(key)} failed ({reason}){hint}", permanent=permanent
        )

    @contextmanager
    def _errors(self, operation: str, key: str, missing: str | None = None) -> Iterator[None]:
        """Translate every S3/boto3 failure of one call; a missing object is ObjectNotFound(`missing`)."""
        try:
            yield
        except ClientError as exc:
            if missing is not None and _is_missing(exc):
                raise ObjectNotFound(missing) from None
            raise self._failure(operation, key, exc) from exc
        except (BotoCoreError, S3UploadFailedError) as exc:
            raise self._failure(operation, key, exc) from exc

    def _missing(self, key: str) -> str:
        return f"no object at {self.describe(key)}"

    def put(self, key: str, data: bytes, content_type: str) -> None:
        with self._errors("PutObject", key):
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, ChecksumSHA256=_sha256(data)
            )

    def get(self, key: str) -> bytes:
        with self._errors("GetObject", key, missing=self._missing(key)):
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            return response["Body"].read()

    def put_file(self, key: str, source: BinaryIO, content_type: str) -> None:
        """Managed (multipart above 64 MiB) upload; S3 verifies the SHA-256 of every part."""
        with self._errors("PutObject", key):
            self.client.upload_fileobj(
                source,
                self.bucket,
                key,
                ExtraArgs={"ContentType": content_type, "ChecksumAlgorithm": "SHA256"},
                Config=_S3_TRANSFER,
            )

    def get_file(self, key: str, sink: BinaryIO) -> None:
        with self._errors("GetObject", key, missing=self._missing(key)):
            self.client.download_fileobj(self.bucket, key, sink, Config=_S3_TRANSFER)

    def open_file(self, key: str) -> BinaryIO:
        local = tempfile.TemporaryFile(prefix="castai-focus-")  # noqa: SIM115  (the caller closes it)
        try:
            self.get_file(key, local)
        except BaseException:
            local.close()
            raise
        local.seek(0)
        return local

    def _head(self, key: str) -> dict[str, Any] | None:
        """HeadObject's answer, None when the object does not exist."""
        try:
            with self._errors("HeadObject", key, missing=""):
                return dict(self.client.head_object(Bucket=self.bucket, Key=key))
        except ObjectNotFound:
            return None

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        with self._errors("ListObjectsV2", prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)

    def delete(self, key: str) -> None:
        with self._errors("DeleteObject", key):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def version(self, key: str) -> str | None:
        head = self._head(key)
        return None if head is None else str(head["ETag"])

    def put_if(self, key: str, data: bytes, content_type: str, expected: str | None) -> None:
        """A conditional PutObject: `If-Match: <ETag>`, or `If-None-Match: *` when the object must not exist.

        AWS S3 evaluates the condition atomically with the write. A store that ignores the headers
        writes unconditionally: the caller's own version checks before and after are then the guard.
        A store that rejects them (501 NotImplemented, 400 InvalidArgument) gets the same treatment
        explicitly: the version is compared here, then the object is put unconditionally (warned once).
        """
        if not self.conditional_writes:
            put_after_version_check(self, key, data, content_type, expected)
            return
        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
        with self._errors("PutObject", key):
            try:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=data,
                    ContentType=content_type,
                    ChecksumSHA256=_sha256(data),
                    **condition,  # type: ignore[arg-type]
                )
            except ClientError as exc:
                code = _code(exc)
                # If-Match on a key deleted meanwhile: S3 answers 404 NoSuchKey, not 412.
                if code in _PRECONDITION_CODES or (expected is not None and code in _MISSING_CODES):
                    raise PreconditionFailed(
                        f"{self.describe(key)} changed while this run was publishing "
                        f"(conditional PutObject {next(iter(condition))} refused)"
                    ) from None
                if code not in _UNSUPPORTED_CONDITION_CODES:
                    raise
                self._without_conditions(key, code)
                put_after_version_check(self, key, data, content_type, expected)

    def _without_conditions(self, key: str, code: str) -> None:
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

    def check_writable(self) -> None:
        """HeadBucket: a missing bucket or missing permissions fail at start, not at the first PutObject."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = _code(exc)
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
        missing = f"{self._missing(src)} (copy to {dst})"
        with self._errors(f"CopyObject {self.describe(src)} ->", dst, missing=missing):
            self.client.copy_object(
                Bucket=self.bucket, Key=dst, CopySource={"Bucket": self.bucket, "Key": src}
            )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code"))


def _is_missing(exc: ClientError) -> bool:
    return _code(exc) in _MISSING_CODES


def _sha256(data: bytes) -> str:
    """The base64 SHA-256 S3 verifies before storing the object."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


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
