"""The test tiers of tiers.py, on a throw-away test suite run in process by pytester."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration  # each test runs a pytest session of its own

SUITE = {
    "test_pure": """
import socket

from hypothesis import given, strategies as st


def test_arithmetic():
    assert 1 + 1 == 2


@given(st.integers())
def test_property(n):
    assert n == n


def test_listens():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
""",
    "test_with_dagster": """
import dagster


def test_uses_dagster():
    assert dagster.DagsterInstance
""",
}


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest('pytest_plugins = ["castai_focus_dagster_tests.tiers"]')
    pytester.makepyfile(**SUITE)
    return pytester


@pytest.mark.parametrize(
    ("tier", "expected"),
    [
        ("unit", {"test_arithmetic", "test_listens"}),
        ("property", {"test_property"}),
        ("integration", {"test_uses_dagster"}),
    ],
)
def test_each_test_gets_its_tier(suite: pytest.Pytester, tier: str, expected: set[str]) -> None:
    result = suite.runpytest("-m", tier, "--collect-only", "-q", "-p", "no:cacheprovider")
    collected = {line.split("::")[-1] for line in result.outlines if "::" in line}
    assert collected == expected


def test_a_unit_test_that_listens_on_a_socket_fails(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-m", "unit", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*a `unit` test listened on a socket*"])
