"""Loopback S3 for tests: a moto server on 127.0.0.1 plus two fault injectors.

Reuse from any test module by importing the fixture functions (pytest registers imported fixtures under
their `name`, and the `_fixture` suffix keeps test parameters from shadowing the imports):

    from castai_focus_dagster_tests.s3_server import s3_bucket_fixture, s3_server_fixture  # noqa: F401

- `s3_server` (session): one `ThreadedMotoServer` on 127.0.0.1, on a free port picked by the OS.
- `s3_bucket` (function): a fresh, empty bucket on that server, so tests never share objects.
- `FaultInjectingStore`: wraps any ObjectStore and fails the Nth matching call, either before the call
  reaches the store or after it succeeded (the "response lost" case, which is the nastier one).
- `HttpFaults`: answers chosen S3 operations with an HTTP error at the botocore level, so the real
  S3ObjectStore error handling and the client's retry policy are exercised.
"""

from __future__ import annotations

import builtins
import itertools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from moto.server import ThreadedMotoServer

from castai_focus_dagster.storage.object_store import ObjectStore, ObjectStoreError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
# moto accepts any credentials; these are passed explicitly so no real AWS profile is ever consulted.
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

_bucket_numbers = itertools.count(1)


@dataclass(frozen=True)
class S3TestServer:
    endpoint_url: str

    def client(self, *, total_attempts: int = 3) -> S3Client:
        """A boto3 client for the loopback server (standard retries, like production)."""
        session = boto3.session.Session(
            aws_access_key_id=DUMMY_CREDENTIALS["aws_access_key_id"],
            aws_secret_access_key=DUMMY_CREDENTIALS["aws_secret_access_key"],
            region_name=REGION,
        )
        config = Config(retries={"mode": "standard", "total_max_attempts": total_attempts})
        return session.client("s3", endpoint_url=self.endpoint_url, config=config)

    def new_bucket(self) -> str:
        name = f"focus-test-{next(_bucket_numbers)}"
        self.client().create_bucket(Bucket=name)
        return name


@contextmanager
def running_s3_server() -> Iterator[S3TestServer]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3TestServer(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture(scope="session", name="s3_server")
def s3_server_fixture() -> Iterator[S3TestServer]:
    with running_s3_server() as server:
        yield server


@pytest.fixture(name="s3_bucket")
def s3_bucket_fixture(s3_server: S3TestServer) -> str:
    return s3_server.new_bucket()


# Fault injection at the ObjectStore level --------------------------------------------------------------

Operation = Literal["put", "get", "exists", "list", "delete", "copy"]


class InjectedFault(ObjectStoreError):
    """The failure a FaultInjectingStore raised on purpose."""


@dataclass(frozen=True)
class Fault:
    """Fail the `nth` call of `operation` whose key (destination for copy) contains `key_contains`."""

    operation: Operation
    key_contains: str = ""
    nth: int = 1
    after: bool = False  # True: perform the call, then raise (the store changed but the caller saw an error)


class FaultInjectingStore:
    """An ObjectStore proxy that records every call and fails the ones its faults select."""

    def __init__(self, inner: ObjectStore, *faults: Fault):
        self.inner = inner
        self.faults = faults
        self.calls: list[tuple[str, str]] = []  # (operation, key) in call order
        self._matched = [0] * len(faults)

    def _select(self, operation: str, key: str) -> Fault | None:
        selected = None
        for index, fault in enumerate(self.faults):
            if fault.operation == operation and fault.key_contains in key:
                self._matched[index] += 1
                if self._matched[index] == fault.nth and selected is None:
                    selected = fault
        return selected

    def _call(self, operation: Operation, key: str, action: Callable[[], Any]) -> Any:
        self.calls.append((operation, key))
        fault = self._select(operation, key)
        if fault is not None and not fault.after:
            raise InjectedFault(f"injected {operation} failure before {self.inner.describe(key)}")
        result = action()
        if fault is not None:
            raise InjectedFault(f"injected {operation} failure after {self.inner.describe(key)}")
        return result

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._call("put", key, lambda: self.inner.put(key, data, content_type))

    def get(self, key: str) -> bytes:
        data: bytes = self._call("get", key, lambda: self.inner.get(key))
        return data

    def exists(self, key: str) -> bool:
        found: bool = self._call("exists", key, lambda: self.inner.exists(key))
        return found

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = self._call("list", prefix, lambda: self.inner.list(prefix))
        return keys

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.inner.delete(key))

    def copy(self, src: str, dst: str) -> None:
        self._call("copy", dst, lambda: self.inner.copy(src, dst))

    def describe(self, key: str) -> str:
        return self.inner.describe(key)

    def version(self, key: str) -> str | None:
        return self.inner.version(key)

    def put_if(self, key: str, data: bytes, content_type: str, expected: str | None) -> None:
        """Counted as a "put": a fault on the manifest put hits the conditional write too."""
        self._call("put", key, lambda: self.inner.put_if(key, data, content_type, expected))

    def check_writable(self) -> None:
        self.inner.check_writable()

    def writes(self) -> builtins.list[tuple[str, str]]:
        """The calls that create or overwrite an object, in order."""
        return [(op, key) for op, key in self.calls if op in ("put", "copy")]


# Fault injection at the HTTP level -------------------------------------------------------------------


class _Body:
    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


class HttpFaults:
    """Answer `times` matching S3 requests with an HTTP error instead of sending them.

    Hooks botocore's `before-send` event, which runs inside the retry loop: each retry attempt counts as
    one request, so `times=1` with retries enabled models a transient error the client recovers from.
    """

    def __init__(self, client: S3Client, operation: str, *, key_contains: str = "", status: int = 500,
                 times: int = 1):  # fmt: skip
        self.client = client
        self.operation = operation
        self.key_contains = key_contains
        self.status = status
        self.remaining = times
        self.injected = 0

    def _before_send(self, request: Any, **_: Any) -> Any:  # an AWSResponse short-circuits the send
        path = unquote(urlsplit(request.url).path)
        key = path.split("/", 2)[2] if path.count("/") >= 2 else ""
        if self.remaining <= 0 or self.key_contains not in key:
            return None
        self.remaining -= 1
        self.injected += 1
        code = "SlowDown" if self.status == 503 else "InternalError"
        body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
        headers: Any = {"Content-Type": "application/xml"}
        return AWSResponse(request.url, self.status, headers, _Body(body))

    @contextmanager
    def installed(self) -> Iterator[HttpFaults]:
        event = f"before-send.s3.{self.operation}"
        self.client.meta.events.register(event, self._before_send)
        try:
            yield self
        finally:
            self.client.meta.events.unregister(event, self._before_send)
