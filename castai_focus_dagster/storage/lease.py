"""The day's publication lease: one run at a time publishes a day."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from castai_focus_dagster.storage.metadata import canonical_json, focus_datetime, parse_focus_datetime
from castai_focus_dagster.storage.publish_model import JSON_CONTENT_TYPE, LeaseHeld, PublishRequest, read_json
from castai_focus_dagster.storage.store_base import ObjectStore, PreconditionFailed

# The day's publication lease: how long it is valid (a killed holder blocks the day this long at most),
# how long another run waits for it before failing (transient: the step retry tries again), how often
# it looks.
LEASE_SECONDS = 900
LEASE_WAIT_SECONDS = 300.0
LEASE_POLL_SECONDS = 2.0
# (lease key, run id) of the leases this process holds now: a lease naming this process but not listed
# here was left by an earlier run in this process whose release failed.
_HELD_LEASES: set[tuple[str, str]] = set()
_log = logging.getLogger(__name__)


def acquire_lease(
    store: ObjectStore,
    key: str,
    req: PublishRequest,
    clock: Callable[[], datetime],
    wait_seconds: float,
    poll_seconds: float,
) -> tuple[str, str, str | None]:
    """Take the day's lease (a conditional create); wait while another run holds it, take it over once
    expired. Returns (key, the version written), for the release."""
    deadline = time.monotonic() + wait_seconds
    while True:
        now = clock()
        body = canonical_json(
            {
                "runId": req.run_id,
                "expiresAt": focus_datetime(now + timedelta(seconds=LEASE_SECONDS)),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "pidNamespace": _pid_namespace(),
            }
        )
        expected = None
        version = store.version(key)
        if version is not None:
            holder = read_json(store, key)
            run_id, expires = _lease_holder(holder)
            if (
                expires is not None
                and expires > now
                and run_id != req.run_id
                and not _holder_died(key, holder)
            ):
                if time.monotonic() >= deadline:
                    raise LeaseHeld(
                        f"run {run_id} is publishing the FOCUS day {req.day.isoformat()} "
                        f"({store.describe(key)}, valid until {focus_datetime(expires)}); this run waited "
                        f"{wait_seconds:g} s and published nothing; it is retried, or re-run the day"
                    )
                time.sleep(poll_seconds)
                continue
            expected = version  # expired, unreadable or our own: take it over
        try:
            store.put_if(key, body, JSON_CONTENT_TYPE, expected)
        except PreconditionFailed:
            continue  # another run took it meanwhile: look again
        _HELD_LEASES.add((key, req.run_id))
        return key, req.run_id, store.version(key)


def _lease_holder(document: Any) -> tuple[str, datetime | None]:
    """(run id, expiry) of a lease document; no expiry when it is malformed (then taken over)."""
    if not isinstance(document, dict):
        return "?", None
    try:
        return str(document.get("runId")), parse_focus_datetime(document["expiresAt"])
    except (KeyError, TypeError, ValueError):
        return str(document.get("runId")), None


def _pid_namespace() -> str | None:
    """This process table's identity (Linux: the PID namespace, e.g. `pid:[4026531836]`); None where
    the system does not tell."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _holder_died(key: str, document: Any) -> bool:
    """True when the lease names a process of this process table that no longer exists (a killed run
    here); a holder elsewhere is alive until its lease expires. The same hostname is not the same
    process table: containers sharing the host's network (and name) each have their own PIDs."""
    if not isinstance(document, dict) or document.get("host") != socket.gethostname():
        return False
    if "pidNamespace" not in document or document["pidNamespace"] != _pid_namespace():
        return False  # another container on this host, or a lease that does not say
    pid = document.get("pid")
    if pid == os.getpid():
        return (key, str(document.get("runId"))) not in _HELD_LEASES
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    return False


def release_lease(store: ObjectStore, key: str, run_id: str, version: str | None) -> None:
    """Delete the lease unless another run took it over (after it expired).

    A failed release does not fail the run (the publication is complete or failed on its own): the
    lease then expires, or is taken over by the next run on this host.
    """
    _HELD_LEASES.discard((key, run_id))
    try:
        if version is not None and store.version(key) == version:
            store.delete(key)
    except Exception as exc:
        _log.warning("could not release the publication lease %s: %s", store.describe(key), exc)
