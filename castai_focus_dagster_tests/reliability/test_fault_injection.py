"""The fault injectors the reliability suite relies on: without their faults the suite would prove nothing."""

from __future__ import annotations

import random

import httpx

from castai_focus_dagster.castai.sandbox import CannedResponse, Faults, SandboxOrg, SandboxServer

REQUESTS = [f"GET /v1/cost-reports/clusters/c{n}/workload-costs?page.cursor=p{n % 3}" for n in range(40)]


def plans(faults: Faults, order: list[str]) -> dict[tuple[str, int], tuple[float, int | None]]:
    """Each request's plan, keyed by (request, how many times it was asked before)."""
    seen: dict[str, int] = {}
    result = {}
    for request in order:
        plan = faults.plan(request.split("?")[0].split(" ")[1], request)
        result[(request, seen.get(request, 0))] = (plan.delay_seconds, plan.status)
        seen[request] = seen.get(request, 0) + 1
    return result


def chaotic(**overrides: object) -> Faults:
    options: dict[str, object] = {
        "rate_429": 0.3,
        "rate_5xx": 0.1,
        "rate_slow": 0.05,
        "slow_seconds": 1.0,
        "seed": 5,
    }
    return Faults(**(options | overrides))  # type: ignore[arg-type]


def test_keyed_draws_do_not_depend_on_arrival_order() -> None:
    order = REQUESTS * 2
    shuffled = order[:]
    random.Random(1).shuffle(shuffled)
    first, second = plans(chaotic(keyed=True), order), plans(chaotic(keyed=True), shuffled)
    assert first == second
    # The shared stream, by contrast, hands the same faults to other requests when the order changes.
    assert plans(chaotic(), order) != plans(chaotic(), shuffled)
    # A retried request draws anew: it is not doomed to the fault of its first attempt.
    statuses = {key: status for key, (_delay, status) in first.items()}
    assert any(statuses[(r, 0)] is not None and statuses[(r, 1)] is None for r in REQUESTS)


def test_injected_faults_are_counted() -> None:
    faults = chaotic(keyed=True)
    outcome = plans(faults, REQUESTS * 5)
    statuses = [status for _delay, status in outcome.values()]
    assert faults.injected["429"] == statuses.count(429) > 0
    assert faults.injected["5xx"] == sum(1 for s in statuses if s in (502, 503, 504)) > 0
    assert faults.injected["slow"] == sum(1 for delay, _s in outcome.values() if delay) > 0


def test_canned_answers_replace_the_sandbox_after_random_faults() -> None:
    org = SandboxOrg.generate(seed=3, clusters=1, workloads_per_cluster=1)
    canned = CannedResponse(200, b'{"items": []}', headers=(("X-Canned", "yes"),))
    faults = Faults(responses={"external-clusters$": lambda query: canned if "x" in query else None})
    with SandboxServer(org, faults=faults) as server, httpx.Client(base_url=server.url) as http:
        headers = {"X-API-Key": org.api_key}
        scripted = http.get("/v1/kubernetes/external-clusters?x=1", headers=headers)
        normal = http.get("/v1/kubernetes/external-clusters", headers=headers)
        assert (scripted.json(), scripted.headers["x-canned"]) == ({"items": []}, "yes")
        assert len(normal.json()["items"]) == 1  # the responder declined: the sandbox answered
        assert faults.injected["canned"] == 1
        assert http.get("/v1/kubernetes/external-clusters?x=1").status_code == 401  # auth comes first
        server.faults = Faults(fail_paths={"external-clusters": 503}, responses=faults.responses)
        assert http.get("/v1/kubernetes/external-clusters?x=1", headers=headers).status_code == 503


def test_trickling_changes_only_how_an_answer_travels() -> None:
    """A trickle draws nothing: the other faults stay where they were; the bytes arrive intact."""
    trickled = chaotic(trickle_paths="/c1/", trickle_seconds_per_byte=0.001)
    assert plans(trickled, REQUESTS) == plans(chaotic(), REQUESTS)
    assert trickled.injected["trickle"] == sum(1 for r in REQUESTS if "/c1/" in r)

    org = SandboxOrg.generate(seed=3, clusters=1, workloads_per_cluster=1)
    with SandboxServer(org) as server:
        path = "/v1/kubernetes/external-clusters"
        headers = {"X-API-Key": org.api_key}
        plain = httpx.get(server.url + path, headers=headers)
        server.faults = Faults(trickle_paths="external-clusters", trickle_seconds_per_byte=0.0002)
        slow = httpx.get(server.url + path, headers=headers, timeout=30)
    assert slow.status_code == plain.status_code == 200 and slow.content == plain.content
    assert server.faults.injected["trickle"] == 1
