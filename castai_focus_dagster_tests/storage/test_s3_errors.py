"""How S3 failures are classified: a permanent S3 error code is found on the error itself, never in text."""

from __future__ import annotations

from typing import Any, cast

import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import ClientError

from castai_focus_dagster.storage.s3_store import S3ObjectStore


def _client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "denied"}}, "PutObject")


def _raised_while_handling(code: str) -> S3UploadFailedError:
    """What boto3's managed upload raises: a new error inside its `except ClientError` handler."""
    try:
        try:
            raise _client_error(code)
        except ClientError as exc:
            raise S3UploadFailedError(f"Failed to upload x to b/k: {exc}")  # noqa: B904 (as boto3 does)
    except S3UploadFailedError as wrapped:
        return wrapped


@pytest.mark.parametrize(("code", "permanent"), [("AccessDenied", True), ("SlowDown", False)])
def test_a_wrapped_client_error_is_classified_by_its_code(code: str, permanent: bool) -> None:
    store = S3ObjectStore(cast(Any, object()), "bucket")
    assert store._failure("put", "k", _raised_while_handling(code)).permanent is permanent
    assert store._failure("put", "k", _client_error(code)).permanent is permanent


def test_a_code_only_named_in_a_message_does_not_make_an_error_permanent() -> None:
    store = S3ObjectStore(cast(Any, object()), "bucket")
    assert not store._failure("put", "k", RuntimeError("proxy said (AccessDenied) once")).permanent
