"""Response and stage caches through the real pipeline: ``Service.build`` -> ``Runtime.answer``.

Every test runs on the one backend matrix of the cache contract (``memory://`` and the
machine Redis), each with its own service name, which is its Redis namespace. What ran is
read from the service's counters, never guessed from timings, except where the saved time is
the point (the stage cache), and there the bound is the stage's own sleep.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import orjson
import pytest

import buttress as bt
from buttress.pipeline.runtime import Answer, Runtime
from tests.services.cached_service import (
    FEATURES_FALLBACK,
    MODEL_FALLBACK,
    CachedService,
    cached_service,
)
from tests.support import PrivateRedis, ServiceBackend, started, unique_prefix


class Pair(bt.Input):
    user: int
    fail: bool = False




def running(
    declared: CachedService, settings: bt.Settings
) -> AbstractAsyncContextManager[Runtime]:
    return started(declared.svc, settings)


async def ask(runtime: Runtime, request: dict[str, Any] | bytes, *,
              bypass: bool = False) -> Answer:
    body = request if isinstance(request, bytes) else orjson.dumps(request)
    answer = await runtime.answer(body, request_id="t", bypass_cache=bypass)
    assert answer.status == 200, answer.body
    return answer


def body(answer: Answer) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(answer.body)
    return parsed


def lookups(runtime: Runtime, cache: str, result: str) -> float:
    value = runtime.metrics.registry.get_sample_value(
        "buttress_cache_lookups_total",
        {"service": runtime.service.name, "cache": cache, "result": result})
    return value or 0.0


def sets(runtime: Runtime, cache: str) -> float:
    value = runtime.metrics.registry.get_sample_value(
        "buttress_cache_sets_total", {"service": runtime.service.name, "cache": cache})
    return value or 0.0


async def test_a_repeated_request_is_a_hit(backend: ServiceBackend) -> None:
    declared = cached_service(backend.name("hit"))
    async with running(declared, backend.settings()) as runtime:
        first = await ask(runtime, {"x": 1.5, "user": 3})
        second = await ask(runtime, {"x": 1.5, "user": 3})
        assert (first.context.cache, second.context.cache) == ("miss", "hit")
        assert second.body == first.body
        assert body(first) == {"x": 1.5, "score": 7.5, "model_calls": 1, "feature_calls": 1}
        assert first.context.fallbacks == second.context.fallbacks == []
        assert declared.calls.model == 1
        assert lookups(runtime, "response", "hit") == 1
        assert lookups(runtime, "response", "miss") == 1
        assert sets(runtime, "response") == 1
        assert sets(runtime, "features") == 1


@pytest.mark.slow
async def test_an_entry_expires_after_its_ttl(backend: ServiceBackend) -> None:
    declared = cached_service(backend.name("ttl"), ttl="200ms")
    async with running(declared, backend.settings()) as runtime:
        assert (await ask(runtime, {"x": 1})).context.cache == "miss"
        assert (await ask(runtime, {"x": 1})).context.cache == "hit"
        await asyncio.sleep(0.35)  # real time: the TTL is the backend's own (Redis PX)
        expired = await ask(runtime, {"x": 1})
        assert expired.context.cache == "miss"
        assert (declared.calls.model, declared.calls.features) == (2, 2)
        assert body(expired)["model_calls"] == 2


async def test_the_key_is_the_validated_input_not_its_spelling(backend: ServiceBackend) -> None:
    declared = cached_service(backend.name("canonical"))
    async with running(declared, backend.settings()) as runtime:
        first = await ask(runtime, b'{"x": 1, "user": 3, "meta": {"a": 1, "b": "z"}}')
        assert first.context.cache == "miss"
        for spelling in (b'{"meta": {"b": "z", "a": 1.0}, "user": 3, "x": 1.0}',
                         b'{"user": 3, "x": 1.00, "mode": "ok", "meta": {"a": 1e0, "b": "z"}}',
                         b'{"x": 1, "user": 3, "meta": {"a": 1, "b": "z"}, "unknown": 5}'):
            again = await ask(runtime, spelling)
            assert again.context.cache == "hit", spelling
            assert again.body == first.body
        other = await ask(runtime, b'{"x": 1, "user": 3, "meta": {"a": 2, "b": "z"}}')
        assert other.context.cache == "miss"
        assert declared.calls.model == 2


async def test_the_model_version_is_part_of_the_key(backend: ServiceBackend) -> None:
    """Two builds of one service (one namespace) that differ only in model version never
    answer each other's requests; a third build with v1 shows the namespace is really shared
    on Redis (and, on memory, that two runtimes in one process share nothing)."""
    name = backend.name("version")
    v1, v2 = cached_service(name, version="v1"), cached_service(name, version="v2")
    request = {"x": 2.0, "user": 1}
    async with running(v1, backend.settings()) as one, \
            running(v2, backend.settings()) as two:
        assert (await ask(one, request)).context.cache == "miss"
        from_v2 = await ask(two, request)
        assert from_v2.context.cache == "miss"
        assert from_v2.context.model_version == "v2"
        assert (await ask(one, request)).context.cache == "hit"
        assert (await ask(two, request)).context.cache == "hit"
        assert (v1.calls.model, v2.calls.model) == (1, 1)
        v1_again = cached_service(name, version="v1")
        async with running(v1_again, backend.settings()) as replica:
            shared = await ask(replica, request)
            assert shared.context.cache == ("hit" if backend.is_redis else "miss")


async def test_fallback_answers_are_not_cached(backend: ServiceBackend) -> None:
    declared = cached_service(backend.name("fallback"))
    async with running(declared, backend.settings()) as runtime:
        for attempt in (1, 2):
            failed = await ask(runtime, {"x": 1, "mode": "raise"})
            assert body(failed)["score"] == MODEL_FALLBACK
            assert failed.context.fallback_categories == ["model_error"]
            assert failed.context.cache == "miss"
            assert declared.calls.model == attempt
        assert sets(runtime, "response") == 0

        for attempt in (1, 2):  # a stage's fallback: neither the stage nor the response stored
            degraded = await ask(runtime, {"x": 1, "user": -5})
            assert degraded.context.fallback_categories == ["features_unavailable"]
            assert degraded.context.cache == "miss"
            assert body(degraded)["score"] == 1 + FEATURES_FALLBACK["f"]
            assert declared.calls.features == 1 + attempt  # user 0 above, then user -5 twice
        assert sets(runtime, "features") == 1  # only user 0's features


async def test_answers_built_while_a_breaker_was_open_are_not_cached(
    backend: ServiceBackend,
) -> None:
    declared = cached_service(backend.name("breaker"),
                              model_breaker=bt.Breaker(consecutive_failures=2, open_for="1h"))
    request = {"x": 4, "user": 1}
    async with running(declared, backend.settings()) as runtime:
        for x in (1, 2):
            await ask(runtime, {"x": x, "mode": "raise"})
        for _ in range(2):
            refused = await ask(runtime, request)
            assert refused.context.fallback_categories == ["model_unavailable"]
            assert refused.context.cache == "miss"
            assert body(refused)["score"] == MODEL_FALLBACK
        assert declared.calls.model == 2  # the open breaker never called the model

        runtime.pipeline.reset_breakers()
        healed = await ask(runtime, request)
        assert (healed.context.cache, healed.context.fallbacks) == ("miss", [])
        assert body(healed)["score"] == 4 + 2
        assert (await ask(runtime, request)).context.cache == "hit"
        assert declared.calls.model == 3


async def test_concurrent_identical_requests_compute_once(backend: ServiceBackend) -> None:
    declared = cached_service(backend.name("flight"))
    async with running(declared, backend.settings()) as runtime:
        answers = await asyncio.gather(*(ask(runtime, {"x": 3, "user": 2}) for _ in range(100)))
        assert declared.calls.model == 1
        assert declared.calls.features == 1
        assert collections.Counter(a.context.cache for a in answers) == {"miss": 1, "hit": 99}
        assert all(a.context.fallbacks == [] for a in answers)
        assert {a.body for a in answers} == {answers[0].body}
        assert body(answers[0])["score"] == 3 + 4


async def test_concurrent_requests_sharing_a_fallback_each_report_it(
    backend: ServiceBackend,
) -> None:
    declared = cached_service(backend.name("flight-fallback"))
    request = {"x": 3, "mode": "raise"}
    async with running(declared, backend.settings()) as runtime:
        answers = await asyncio.gather(*(ask(runtime, request) for _ in range(100)))
        assert declared.calls.model == 1
        assert collections.Counter(a.context.cache for a in answers) == {"miss": 1, "hit": 99}
        for answer in answers:
            assert [(f.stage, f.category) for f in answer.context.fallbacks] == [
                ("score", bt.Category.MODEL_ERROR)]
            assert body(answer)["score"] == MODEL_FALLBACK
        later = await ask(runtime, request)  # shared while in flight, never stored
        assert later.context.cache == "miss"
        assert declared.calls.model == 2


async def test_a_stage_cache_keyed_by_user_saves_the_stage(backend: ServiceBackend) -> None:
    declared = cached_service(backend.name("stage"), feature_sleep=0.02)
    async with running(declared, backend.settings()) as runtime:
        started = time.perf_counter()
        first = await ask(runtime, {"x": 1, "user": 7})
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        second = await ask(runtime, {"x": 2, "user": 7})  # another response, the same user
        second_s = time.perf_counter() - started
        assert (first.context.cache, second.context.cache) == ("miss", "miss")
        assert declared.calls.features == 1
        assert declared.calls.model == 2
        assert "features" in first.context.stage_ms
        assert "features" not in second.context.stage_ms
        assert first_s >= 0.02
        assert second_s < 0.02, f"the cached stage still cost {second_s * 1000:.1f} ms"
        assert body(second)["score"] == 2 + 14
        assert lookups(runtime, "features", "hit") == 1


async def test_no_cache_bypasses_and_refreshes_the_entry(backend: ServiceBackend) -> None:
    declared = cached_service(backend.name("bypass"))
    request = {"x": 5, "user": 1}
    async with running(declared, backend.settings()) as runtime:
        first = await ask(runtime, request)
        assert (await ask(runtime, request)).context.cache == "hit"
        fresh = await ask(runtime, request, bypass=True)
        assert fresh.context.cache == "bypass"
        assert declared.calls.model == 2
        assert body(fresh)["model_calls"] == 2 != body(first)["model_calls"]
        after = await ask(runtime, request)
        assert after.context.cache == "hit"
        assert after.body == fresh.body  # the bypass stored its fresh answer
        assert declared.calls.model == 2


async def test_a_sibling_stage_fallback_is_not_replayed_to_waiters(backend: ServiceBackend) -> None:
    """Stages of one level run concurrently on one context: a fallback of an uncached sibling
    lands while a cached stage is computing. Requests that shared that stage's computation must
    not receive the sibling's fallback, which happened to another request."""
    svc = bt.Service(backend.name("siblings"), input=Pair)
    calls = collections.Counter[str]()

    @svc.stage(cache=bt.Cache(key=lambda pair: pair.user), fallback={})
    async def profile(pair: Pair) -> dict[str, int]:
        calls["profile"] += 1
        await asyncio.sleep(0.02)
        return {"user": pair.user}

    @svc.stage(fallback=0, category=bt.Category.FEATURES_UNAVAILABLE)
    async def sibling(pair: Pair) -> int:
        await asyncio.sleep(0.005)  # fails while ``profile`` is still computing
        if pair.fail:
            raise RuntimeError("injected failure of the uncached sibling")
        return 1

    @svc.respond
    def respond(pair: Pair, profile: dict[str, int], sibling: int) -> dict[str, Any]:
        return {"profile": profile, "sibling": sibling}

    runtime = svc.build(backend.settings())
    await runtime.start()
    try:
        failing, healthy = await asyncio.gather(ask(runtime, {"user": 1, "fail": True}),
                                                ask(runtime, {"user": 1, "fail": False}))
        assert calls["profile"] == 1
        assert failing.context.fallback_categories == ["features_unavailable"]
        assert healthy.context.fallbacks == []
        assert orjson.loads(healthy.body) == {"profile": {"user": 1}, "sibling": 1}
        # the sibling's failure did not make profile's own value unfit to store
        later = await ask(runtime, {"user": 1})
        assert (later.context.fallbacks, calls["profile"]) == ([], 1)
    finally:
        await runtime.stop()


@pytest.mark.redis
@pytest.mark.slow
async def test_requests_succeed_through_a_redis_outage(private_redis: PrivateRedis,
                                                       tmp_path: Path) -> None:
    """Redis dies mid-run: every answer is still right and quick, marked cache_unavailable.
    When Redis is back, hits resume once the cache breakers' open interval (the default
    ``Breaker``: 5 s; ``bt.Cache`` has no breaker setting) is over."""
    declared = cached_service(unique_prefix("outage"))
    settings = ServiceBackend(f"{private_redis.url}?timeout=50ms", tmp_path).settings()
    async with running(declared, settings) as runtime:
        assert (await ask(runtime, {"x": 1, "user": 1})).context.cache == "miss"
        assert (await ask(runtime, {"x": 1, "user": 1})).context.cache == "hit"

        private_redis.stop()
        for i in range(20):
            started = time.perf_counter()
            answer = await ask(runtime, {"x": 1 + i % 2, "user": 1})
            elapsed = time.perf_counter() - started
            assert elapsed < 0.5, f"request {i} took {elapsed * 1000:.0f} ms"
            assert answer.context.cache == "miss"
            assert "cache_unavailable" in answer.context.fallback_categories
            assert set(answer.context.fallback_categories) == {"cache_unavailable"}
            assert body(answer)["score"] == 1 + i % 2 + 2
        assert declared.calls.model == 1 + 20
        errors = runtime.metrics.registry.get_sample_value(
            "buttress_cache_errors_total", {"service": runtime.service.name, "cache": "response"})
        assert errors is not None
        assert errors >= 20

        private_redis.start()
        deadline = time.monotonic() + 15
        for attempt in range(1000):  # a new request each time: none was stored in between
            request = {"x": 100 + attempt, "user": 9}
            answer = await ask(runtime, request)
            if not answer.context.fallbacks:
                break
            assert time.monotonic() < deadline, "the cache never came back after Redis did"
            await asyncio.sleep(0.25)  # the breakers' real open interval: no clock to inject
        assert answer.context.cache == "miss"
        assert (await ask(runtime, request)).context.cache == "hit"


@pytest.mark.redis
@pytest.mark.slow
async def test_a_hung_redis_costs_each_request_its_timeout_then_nothing(
        private_redis: PrivateRedis, tmp_path: Path) -> None:
    """A Redis that accepts nothing and answers nothing (SIGSTOP): a request waits at most the
    URL's ``timeout`` per cache, and once the breakers are open it does not wait at all."""
    declared = cached_service(unique_prefix("hung"))
    settings = ServiceBackend(f"{private_redis.url}?timeout=50ms", tmp_path).settings()
    async with running(declared, settings) as runtime:
        assert (await ask(runtime, {"x": 1})).context.cache == "miss"
        assert private_redis.process is not None
        os.kill(private_redis.process.pid, signal.SIGSTOP)
        try:
            took = []
            for i in range(12):
                started = time.perf_counter()
                answer = await ask(runtime, {"x": 1})
                took.append(time.perf_counter() - started)
                assert answer.context.fallback_categories == ["cache_unavailable"], i
                assert body(answer)["score"] == 1
        finally:
            os.kill(private_redis.process.pid, signal.SIGCONT)
        # two caches (response, features) at 50 ms each, plus scheduling noise
        assert max(took) < 0.5, [round(t * 1000) for t in took]
        assert max(took[:2]) >= 0.05  # the first requests really waited for the timeout
        assert max(took[-5:]) < 0.025, [round(t * 1000) for t in took]  # breakers open


async def test_a_request_sharing_a_computation_keeps_its_own_deadline(
    backend: ServiceBackend,
) -> None:
    svc = bt.Service(backend.name("deadline"), input=Pair, cache=bt.Cache())

    @svc.stage(fallback=0)
    async def slow(pair: Pair) -> int:
        await asyncio.sleep(0.3)
        return 1

    @svc.respond
    def respond(pair: Pair, slow: int) -> dict[str, int]:
        return {"slow": slow}

    runtime = svc.build(backend.settings())
    await runtime.start()

    async def timed(deadline: float) -> tuple[Answer, float]:
        started = time.perf_counter()
        answer = await runtime.answer(b'{"user": 1}', request_id="d", deadline_s=deadline)
        return answer, time.perf_counter() - started

    try:
        (patient, _), (hurried, took) = await asyncio.gather(timed(2.0), timed(0.05))
        assert orjson.loads(patient.body) == {"slow": 1}
        assert hurried.status in (200, 503)  # its own fallback, or 503 without one
        assert took < 0.2, f"a 50 ms request answered after {took * 1000:.0f} ms"
    finally:
        await runtime.stop()
