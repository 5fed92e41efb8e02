"""Guardrails through the real pipeline: ``Service.build`` -> ``Runtime.start`` -> ``answer``.

Each test runs on ``memory://`` and on the machine Redis (its own service name, which is its
Redis namespace; only those keys are deleted afterwards). The service (tests/services/
guarded_service.py) grants what a request asks for, so each test picks every request's cost
and knows exactly which answers a correct guardrail admits. Outages use a private Redis the
test stops (or freezes with SIGSTOP, so that only the 50 ms socket timeout ends a call).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

import buttress as bt
import buttress.pipeline.guardrail_gate
from buttress.guardrails import Decision, Guardrails
from buttress.guardrails.policy import UNITS, FailPolicy
from buttress.pipeline.runtime import Answer, Runtime
from tests.services.guarded_service import (
    COUNT_GUARDRAIL,
    DEFAULT_GRANT,
    VALUE_GUARDRAIL,
    Claim,
    guarded_service,
    per_user_count,
    value_sum,
)
from tests.support import (
    PrivateRedis,
    ServiceBackend,
    started,
    unique_prefix,
)

EXCEEDED = ["guardrail_exceeded"]
UNAVAILABLE = ["guardrail_unavailable"]




async def claim(runtime: Runtime, user: str, value: float = 1.0, mode: str = "ok") -> Answer:
    body = orjson.dumps({"user": user, "value": value, "mode": mode})
    answer = await runtime.answer(body, request_id=f"{user}-{value}")
    assert answer.status == 200, answer.body
    return answer


def granted(answer: Answer) -> float:
    value: float = orjson.loads(answer.body)["granted"]
    return value


def fallbacks(answer: Answer) -> list[str]:
    return answer.context.fallback_categories


def guardrails_of(runtime: Runtime) -> Guardrails:
    gate = runtime.pipeline.gate
    assert gate is not None
    return gate.guardrails


async def used(runtime: Runtime, name: str) -> dict[str | None, float]:
    """The guardrail's use now, by key, as its snapshot (the admin API's source) reports it."""
    snapshots = {s.name: s for s in await guardrails_of(runtime).snapshot(top=100)}
    return {u.key: u.used for u in snapshots[name].usage}


def trips(runtime: Runtime, name: str) -> float:
    value = runtime.metrics.registry.get_sample_value(
        "buttress_guardrail_trips_total", {"service": runtime.service.name, "guardrail": name})
    return value or 0.0


def units(value: float) -> int:
    return round(value * UNITS)


# -- budgets ------------------------------------------------------------------------------


async def test_count_per_key_serves_the_default_prediction_past_the_limit(
        backend: ServiceBackend) -> None:
    declared = guarded_service(backend.name("count"), [per_user_count(3)])
    async with started(declared.svc, backend.settings()) as runtime:
        for _ in range(3):
            admitted = await claim(runtime, "alice", 5)
            assert (granted(admitted), fallbacks(admitted)) == (5, [])
        refused = await claim(runtime, "alice", 5)
        assert granted(refused) == DEFAULT_GRANT
        assert fallbacks(refused) == EXCEEDED
        assert [(f.stage, f.detail) for f in refused.context.fallbacks] == [
            ("guardrails", COUNT_GUARDRAIL)]
        other = await claim(runtime, "bob", 5)
        assert (granted(other), fallbacks(other)) == (5, [])
        # the refused request spent nothing; warm-up requests (the example) spent nothing
        assert await used(runtime, COUNT_GUARDRAIL) == {"alice": 3, "bob": 1}
        assert trips(runtime, COUNT_GUARDRAIL) == 1


async def test_value_sum_admits_whole_requests_up_to_the_limit_and_never_past_it(
        backend: ServiceBackend) -> None:
    limit = 25.0
    declared = guarded_service(backend.name("sum"), [value_sum(limit)])
    rng = random.Random(6)
    values = [round(rng.uniform(0.1, 4.0), 2) for _ in range(40)]
    async with started(declared.svc, backend.settings()) as runtime:
        answers = [await claim(runtime, f"user-{i % 3}", v) for i, v in enumerate(values)]
        total = 0
        for value, answer in zip(values, answers, strict=True):
            fits = total + units(value) <= units(limit)  # what an exact guardrail must do
            if fits:
                total += units(value)
                assert (granted(answer), fallbacks(answer)) == (value, [])
            else:  # refused whole: it spends nothing, so a smaller later request may still fit
                assert (granted(answer), fallbacks(answer)) == (DEFAULT_GRANT, EXCEEDED)
        assert sum(fallbacks(a) == EXCEEDED for a in answers) >= 5
        assert units(limit) - units(max(values)) < total <= units(limit)
        assert units((await used(runtime, VALUE_GUARDRAIL))[None]) == total


async def test_request_is_admitted_only_if_it_fits_every_guardrail(backend: ServiceBackend) -> None:
    declared = guarded_service(backend.name("both"), [per_user_count(3), value_sum(10)])
    async with started(declared.svc, backend.settings()) as runtime:
        assert granted(await claim(runtime, "alice", 4)) == 4
        assert granted(await claim(runtime, "alice", 4)) == 4
        over_value = await claim(runtime, "alice", 4)  # 12 > 10, count would fit
        assert (granted(over_value), fallbacks(over_value)) == (DEFAULT_GRANT, EXCEEDED)
        assert over_value.context.fallbacks[0].detail == VALUE_GUARDRAIL
        assert granted(await claim(runtime, "alice", 2)) == 2  # count 3 (not 4), value 10
        over_both = await claim(runtime, "alice", 1)
        assert over_both.context.fallbacks[0].detail == f"{COUNT_GUARDRAIL},{VALUE_GUARDRAIL}"
        over_count = await claim(runtime, "alice", 0)  # costs 0 value, so only the count applies
        assert over_count.context.fallbacks[0].detail == COUNT_GUARDRAIL
        assert (await used(runtime, COUNT_GUARDRAIL), await used(runtime, VALUE_GUARDRAIL)) == (
            {"alice": 3}, {None: 10})
        assert (trips(runtime, COUNT_GUARDRAIL), trips(runtime, VALUE_GUARDRAIL)) == (2, 2)


async def test_a_request_whose_model_fell_back_is_not_counted(backend: ServiceBackend) -> None:
    declared = guarded_service(backend.name("fellback"), [per_user_count(3), value_sum(100)])
    async with started(declared.svc, backend.settings()) as runtime:
        for _ in range(5):
            failed = await claim(runtime, "alice", 5, mode="raise")
            assert (granted(failed), fallbacks(failed)) == (DEFAULT_GRANT, ["model_error"])
        assert [granted(await claim(runtime, "alice", 5)) for _ in range(4)] == [5, 5, 5, 0]
        assert await used(runtime, VALUE_GUARDRAIL) == {None: 15}


async def test_a_cached_answer_still_passes_the_guardrails(backend: ServiceBackend) -> None:
    declared = guarded_service(backend.name("cached"), [per_user_count(3)],
                               cache=bt.Cache(ttl="60s"))
    async with started(declared.svc, backend.settings()) as runtime:
        rows_before = declared.calls.rows  # the warm-up ran the model
        answers = [await claim(runtime, "alice", 5) for _ in range(5)]
        assert [a.context.cache for a in answers] == ["miss", "hit", "hit", "hit", "hit"]
        assert [granted(a) for a in answers] == [5, 5, 5, DEFAULT_GRANT, DEFAULT_GRANT]
        assert [fallbacks(a) for a in answers] == [[], [], [], EXCEEDED, EXCEEDED]
        assert declared.calls.rows - rows_before == 1
        # the refusal did not replace the cached answer, and a raised limit applies at once
        await guardrails_of(runtime).set_limit(COUNT_GUARDRAIL, 4)
        again = await claim(runtime, "alice", 5)
        assert (again.context.cache, granted(again), fallbacks(again)) == ("hit", 5, [])
        assert fallbacks(await claim(runtime, "alice", 5)) == EXCEEDED
        await guardrails_of(runtime).set_limit(COUNT_GUARDRAIL, None)  # back to the declared 3
        assert fallbacks(await claim(runtime, "bob", 5)) == []
        assert (await guardrails_of(runtime).snapshot())[0].limit == 3


# -- outages ------------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.parametrize("outage", ["stopped", "frozen"])
@pytest.mark.parametrize("fail", ["closed", "open"])
async def test_redis_down_follows_the_fail_policy_within_the_timeout(
        private_redis: PrivateRedis, tmp_path: Path, fail: FailPolicy, outage: str) -> None:
    declared = guarded_service(unique_prefix("guarded-down"),
                               [per_user_count(3, fail), value_sum(100, fail)])
    settings = bt.Settings(guardrails_url=private_redis.url + "?timeout=50ms",
                           events_dir=str(tmp_path / "events"), deadline=2.0, max_deadline=2.0)
    async with started(declared.svc, settings) as runtime:
        assert (granted(await claim(runtime, "alice", 5)), runtime.ready) == (5, True)
        assert private_redis.process is not None
        pid = private_redis.process.pid
        if outage == "stopped":
            private_redis.stop()
        else:  # connections stay open and nothing answers: only the socket timeout helps
            os.kill(pid, signal.SIGSTOP)
        try:
            for _ in range(8):  # the breaker opens after 5 failures; the rest cost nothing
                began = time.perf_counter()
                answer = await claim(runtime, "alice", 5)
                assert time.perf_counter() - began < 0.5
                assert fallbacks(answer) == UNAVAILABLE
                assert granted(answer) == (DEFAULT_GRANT if fail == "closed" else 5)
                assert answer.context.fallbacks[0].stage == "guardrails"
        finally:
            if outage == "frozen":
                os.kill(pid, signal.SIGCONT)
        # an outage is not a trip: trips count requests over budget only
        assert trips(runtime, COUNT_GUARDRAIL) == trips(runtime, VALUE_GUARDRAIL) == 0
        fallback_count = runtime.metrics.registry.get_sample_value(
            "buttress_fallbacks_total", {"service": runtime.service.name,
                                         "stage": "guardrails",
                                         "category": "guardrail_unavailable"})
        assert fallback_count == 8


# -- concurrency and batching -------------------------------------------------------------


async def test_concurrent_requests_are_batched_and_never_overshoot(backend: ServiceBackend) -> None:
    limit = 100.0
    declared = guarded_service(backend.name("many"), [value_sum(limit)],
                               batch=bt.Batch(max_size=64, max_wait="2ms"))
    rng = random.Random(7)
    values = [round(rng.uniform(0.5, 3.0), 2) for _ in range(200)]
    async with started(declared.svc, backend.settings()) as runtime:
        guardrails = guardrails_of(runtime)
        backend_calls: list[int] = []
        admit_many = guardrails.admit_many

        async def counted(items: Sequence[tuple[Any, Any]]) -> list[Decision]:
            backend_calls.append(len(items))
            return await admit_many(items)

        guardrails.admit_many = counted  # type: ignore[method-assign]
        answers = await asyncio.gather(*(claim(runtime, f"user-{i}", v)
                                         for i, v in enumerate(values)))
        admitted = [v for v, a in zip(values, answers, strict=True) if not fallbacks(a)]
        refused = [v for v, a in zip(values, answers, strict=True) if fallbacks(a)]
        total = sum(map(units, admitted))
        assert total <= units(limit)  # 0 overshoot
        assert refused
        assert all(total + units(v) > units(limit) for v in refused)
        for value, answer in zip(values, answers, strict=True):
            expected = (value, []) if not fallbacks(answer) else (DEFAULT_GRANT, EXCEEDED)
            assert (granted(answer), fallbacks(answer)) == expected
        assert units((await used(runtime, VALUE_GUARDRAIL))[None]) == total
        assert sum(backend_calls) == len(values)
        if backend.url.startswith("redis"):  # one Lua call per loop iteration's admissions
            assert len(backend_calls) < len(values) / 4, backend_calls


# -- metrics ------------------------------------------------------------------------------


async def test_usage_gauges_follow_the_budget_for_the_top_keys_only(
        backend: ServiceBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(buttress.pipeline.guardrail_gate, "USAGE_REFRESH_SECONDS", 0.05)
    declared = guarded_service(backend.name("gauges"), [per_user_count(3), value_sum(100)])
    async with started(declared.svc, backend.settings()) as runtime:
        for _ in range(3):
            await claim(runtime, "hot", 2)
        for user in range(buttress.pipeline.guardrail_gate.TOP_KEYS + 2):
            await claim(runtime, f"cold-{user}", 1)
        registry, service = runtime.metrics.registry, runtime.service.name

        def gauge(metric: str, guardrail: str, key: str) -> float | None:
            return registry.get_sample_value(
                metric, {"service": service, "guardrail": guardrail, "key": key})

        deadline = time.monotonic() + 5
        while gauge("buttress_guardrail_budget_used", VALUE_GUARDRAIL, "") != 18:
            assert time.monotonic() < deadline, "the usage gauges were not refreshed"
            await asyncio.sleep(0.02)
        assert gauge("buttress_guardrail_budget_remaining", VALUE_GUARDRAIL, "") == 82
        assert gauge("buttress_guardrail_budget_used", COUNT_GUARDRAIL, "hot") == 3
        assert gauge("buttress_guardrail_budget_remaining", COUNT_GUARDRAIL, "hot") == 0
        keys = {s.labels["key"] for metric in registry.collect()
                if metric.name == "buttress_guardrail_budget_used"
                for s in metric.samples if s.labels["guardrail"] == COUNT_GUARDRAIL}
        assert "hot" in keys
        assert len(keys) == buttress.pipeline.guardrail_gate.TOP_KEYS


async def test_a_refusal_reuses_the_requests_stage_results(tmp_path: Path) -> None:
    """Running out of budget must not cost a second feature look-up."""
    svc = bt.Service(unique_prefix("reuse"), input=Claim,
                     guardrails=[bt.FixedWindow("one", limit=1, window="1h")])
    looked_up = {"n": 0}

    @svc.stage(fallback=0.0)
    async def feature(item: Claim) -> float:
        looked_up["n"] += 1
        return 1.0

    @svc.model(model=lambda rows: rows[:, 0], fallback=lambda item: np.array([0.0]))
    def score(item: Claim, feature: float) -> np.ndarray:
        return np.array([[feature]])

    @svc.respond
    def respond(item: Claim, score: np.ndarray) -> dict[str, float]:
        return {"score": float(score[0])}

    runtime = svc.build(bt.Settings(events_dir=str(tmp_path)))
    await runtime.start()
    try:
        first = await runtime.answer(b'{"user": "u"}', request_id="1")
        second = await runtime.answer(b'{"user": "u"}', request_id="2")
    finally:
        await runtime.stop()
    assert orjson.loads(first.body) == {"score": 1.0}
    assert orjson.loads(second.body) == {"score": 0.0}
    assert second.context.fallback_categories == ["guardrail_exceeded"]
    assert looked_up["n"] == 2  # one per request, none for the refusal
