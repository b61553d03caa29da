"""Test tiers, derived at collection so no test file has to carry them.

`unit`: the pure core in process — no Dagster code or instance, no server, no subprocess, no randomised
search. `property`: pure too, but a Hypothesis search (seconds each). `integration`: everything else.
`make test-fast` runs `-m unit`; `make test` runs all three. A test may set its tier explicitly with
`@pytest.mark.integration` (or `unit`, `property`); otherwise the rules below decide, and a guard fails
a `unit` test that listens on a socket, starts a process or creates a Dagster instance, so a wrong tier
shows up as a red test instead of a slow fast loop.
"""

from __future__ import annotations

import functools
import inspect
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import NoReturn
from unittest import mock

import pytest

TIERS = ("unit", "property", "integration")
# The shared fixtures that start a server; other fixtures and tests are read for the signs of one.
SERVER_FIXTURES = frozenset({"sandbox", "exporter_env", "s3_server", "s3_bucket"})
NOT_PURE = re.compile(
    r"SandboxServer\(|running_s3_server\(|ThreadedMotoServer\(|serve_forever|subprocess\.|Popen\("
    r"|DagsterInstance|^\s*(from|import) dagster\b",
    re.MULTILINE,
)
# A test module importing one of these at its top holds Dagster tests only.
DAGSTER_IMPORT = re.compile(
    r"^(from|import) (dagster\w*|castai_focus_dagster\.(defs|definitions)|castai_focus_dagster_tests\."
    r"(dagster_dev|reliability\.harness))\b",
    re.MULTILINE,
)


@functools.cache
def _module_imports_dagster(path: Path) -> bool:
    return path.suffix == ".py" and DAGSTER_IMPORT.search(path.read_text(encoding="utf-8")) is not None


@functools.cache
def _not_pure(function: Callable[..., object]) -> bool:
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):  # pytest's own fixtures (tmp_path, monkeypatch…) are pure
        return False
    return NOT_PURE.search(source) is not None


def tier(item: pytest.Item) -> str:
    explicit = [name for name in TIERS if item.get_closest_marker(name)]
    if explicit:
        return explicit[-1]  # integration wins over the others when several are given
    if _module_imports_dagster(Path(item.path)) or SERVER_FIXTURES.intersection(
        getattr(item, "fixturenames", ())
    ):
        return "integration"
    info = getattr(item, "_fixtureinfo", None)
    fixtures = [defs[-1].func for defs in info.name2fixturedefs.values()] if info is not None else []
    function = getattr(item, "function", None)
    if any(_not_pure(f) for f in (function, *fixtures) if f is not None):
        return "integration"
    callspec = getattr(item, "callspec", None)  # the S3 variant of a `store` fixture runs against moto
    if callspec is not None and any(isinstance(v, str) and v == "s3" for v in callspec.params.values()):
        return "integration"
    return "property" if getattr(function, "is_hypothesis_test", False) else "unit"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """`-m unit` alone skips importing the Dagster test modules: they hold no unit test."""
    if config.option.markexpr == "unit" and _module_imports_dagster(collection_path):
        return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(tier(item))


def _refuse(what: str) -> Callable[..., NoReturn]:
    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise RuntimeError(
            f"a `unit` test {what}: mark it `integration` (see castai_focus_dagster_tests/tiers.py)"
        )

    return refuse


@contextmanager
def _unit_guard(item: pytest.Item) -> Iterator[None]:
    with ExitStack() as stack:
        if item.get_closest_marker("unit") is not None and item.get_closest_marker("integration") is None:
            stack.enter_context(mock.patch.object(socket.socket, "listen", _refuse("listened on a socket")))
            stack.enter_context(mock.patch.object(subprocess.Popen, "__init__", _refuse("started a process")))
            dagster = sys.modules.get("dagster")
            if dagster is not None:
                refuse = _refuse("created a Dagster instance")
                stack.enter_context(mock.patch.object(dagster.DagsterInstance, "__init__", refuse))
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _unit_guard(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _unit_guard(item):
        return (yield)
