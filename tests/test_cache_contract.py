"""One contract, every backend: the same tests run on ``memory://`` and on the machine Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from buttress.backends import Connections
from buttress.cache import MISS, Cache, CacheStatus, ResultCache
from buttress.resilience.categories import Category
from tests.support import (
    MACHINE_REDIS_URL,
    SENTINEL_URL_TEMPLATE,
    FakeClock,
    matrix_url,
    unique_prefix,
)

BACKENDS = {
    "memory": pytest.param("memory://", id="memory"),
    "redis": pytest.param(MACHINE_REDIS_URL, id="redis", marks=pytest.mark.redis),
    "sentinel": pytest.param(SENTINEL_URL_TEMPLATE, id="sentinel",
                             marks=[pytest.mark.redis, pytest.mark.slow]),
}


@dataclass
class RecordingObserver:
    """A real observer (the service binds the same hooks to Prometheus counters)."""

    hits: int = 0
    misses: int = 0
    sets: int = 0
    evictions: int = 0
    errors: list[tuple[Category, BaseException]] = field(default_factory=list)
    _miss_waits: list[tuple[int, asyncio.Event]] = field(default_factory=list)

    def misses_reach(self, count: int) -> asyncio.Event:
        """An event set once ``count`` misses were seen: every caller has joined a flight."""
        event = asyncio.Event()
        self._miss_waits.append((count, event))
        return event

    def on_hit(self, count: int) -> None:
        self.hits += count

    def on_miss(self, count: int) -> None:
        self.misses += count
        for threshold, event in self._miss_waits:
            if self.misses >= threshold:
                event.set()

    def on_set(self, count: int) -> None:
        self.sets += count

    def on_eviction(self) -> None:
        self.evictions += 1

    def on_error(self, category: Category, error: BaseException) -> None:
        self.errors.append((category, error))


@dataclass
class Harness:
    url: str
    namespace: str
    connections: Connections
    clock: FakeClock = field(default_factory=FakeClock)
    observer: RecordingObserver = field(default_factory=RecordingObserver)
    caches: list[ResultCache] = field(default_factory=list)

    @property
    def is_redis(self) -> bool:
        return self.url.startswith("redis")

    async def cache(self, scope: str = "response", **policy: Any) -> ResultCache:
        cache = ResultCache(
            Cache(url=self.url, **policy),
            namespace=self.namespace,
            scope=scope,
            observer=self.observer,
            clock=self.clock,
        )
        await cache.open(self.connections)
        self.caches.append(cache)
        return cache


@pytest.fixture(params=BACKENDS.values())
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    url = matrix_url(request.param, request)
    h = Harness(url=url, namespace=unique_prefix("cache"), connections=Connections())
    yield h
    for cache in h.caches:
        await cache.aclose()
    if h.is_redis:  # remove only this test's keys
        client = h.connections.redis(url)
        keys = [
            k async for k in client.scan_iter(match=f"buttress:{{{h.namespace}}}:*", count=1000)
        ]
        if keys:
            await client.delete(*keys)
    await h.connections.aclose()


def computing(
    value: Any, *, cacheable: bool = True
) -> tuple[Callable[[], Awaitable[tuple[Any, bool]]], list[int]]:
    calls: list[int] = []

    async def compute() -> tuple[Any, bool]:
        calls.append(1)
        return value, cacheable

    return compute, calls


async def test_miss_then_hit(harness: Harness) -> None:
    cache = await harness.cache()
    key = cache.key({"user": 1}, "v1")
    assert await cache.get(key) is MISS
    assert await cache.set(key, {"score": 0.5})
    assert await cache.get(key) == {"score": 0.5}
    assert cache.stats().hits == 1
    assert cache.stats().misses == 1
    assert cache.stats().sets == 1
    assert (harness.observer.hits, harness.observer.misses, harness.observer.sets) == (1, 1, 1)
    assert harness.observer.errors == []


async def test_get_or_compute_computes_once_then_hits(harness: Harness) -> None:
    cache = await harness.cache()
    compute, calls = computing({"discount_pct": 7.5})
    first = await cache.get_or_compute("k", compute)
    second = await cache.get_or_compute("k", compute)
    assert first.value == second.value == {"discount_pct": 7.5}
    assert (first.status, second.status) == (CacheStatus.MISS, CacheStatus.HIT)
    assert len(calls) == 1


@pytest.mark.parametrize(
    "harness",
    [
        BACKENDS["memory"],
        pytest.param(MACHINE_REDIS_URL, id="redis", marks=[pytest.mark.redis, pytest.mark.slow]),
    ],
    indirect=True,
)
async def test_ttl_expiry(harness: Harness) -> None:
    if not harness.is_redis:  # the memory backend's time is the injected clock
        cache = await harness.cache(ttl="10s")
        await cache.set("k", 1)
        harness.clock.advance(9.9)
        assert await cache.get("k") == 1
        harness.clock.advance(0.2)
        assert await cache.get("k") is MISS
        return
    cache = await harness.cache(ttl="100ms")  # Redis expires on the server's clock
    await cache.set("k", 1)
    assert await cache.get("k") == 1
    deadline = time.monotonic() + 2.0
    while await cache.get("k") is not MISS:
        assert time.monotonic() < deadline, "the value outlived its 100 ms ttl by 1.9 s"
        await asyncio.sleep(0.02)


async def test_equal_inputs_share_an_entry(harness: Harness) -> None:
    from tests.test_cache_policy_and_keys import ORDER_A, ORDER_B, Order

    cache = await harness.cache()
    compute, calls = computing({"discounts": []})
    a = Order.model_validate_json(ORDER_A)
    b = Order.model_validate_json(ORDER_B)
    await cache.get_or_compute(cache.key(a, "v1"), compute)
    hit = await cache.get_or_compute(cache.key(b, "v1"), compute)
    assert hit.status is CacheStatus.HIT
    assert len(calls) == 1


async def test_model_version_is_part_of_the_key(harness: Harness) -> None:
    cache = await harness.cache()
    v1, v1_calls = computing("answer of v1")
    v2, v2_calls = computing("answer of v2")
    payload = {"user": 7}
    assert (await cache.get_or_compute(cache.key(payload, "v1"), v1)).value == "answer of v1"
    assert (await cache.get_or_compute(cache.key(payload, "v2"), v2)).value == "answer of v2"
    # roll back: v1's answer is still v1's, never v2's
    assert (await cache.get_or_compute(cache.key(payload, "v1"), v2)).value == "answer of v1"
    assert (len(v1_calls), len(v2_calls)) == (1, 1)


async def test_uncacheable_answers_are_not_stored(harness: Harness) -> None:
    cache = await harness.cache()
    fallback, calls = computing({"discount_pct": 0.0}, cacheable=False)
    assert (await cache.get_or_compute("k", fallback)).value == {"discount_pct": 0.0}
    assert await cache.get("k") is MISS
    await cache.get_or_compute("k", fallback)
    assert len(calls) == 2
    assert cache.stats().sets == 0


async def test_invalidate_forgets_the_scope_only(harness: Harness) -> None:
    response = await harness.cache("response")
    features = await harness.cache("features")
    await response.set("a", 1)
    await response.set("b", 2)
    await features.set("a", "features of a")
    assert await response.invalidate()
    assert await response.get_many(["a", "b"]) == [MISS, MISS]
    assert await features.get("a") == "features of a"
    await response.set("a", 3)
    assert await response.get("a") == 3


async def test_a_value_computed_before_invalidate_is_not_stored_after_it(
    harness: Harness,
) -> None:
    cache = await harness.cache()

    async def compute_across_invalidation() -> tuple[Any, bool]:
        await cache.invalidate()  # e.g. the features changed while we computed
        return "stale", True

    assert (await cache.get_or_compute("k", compute_across_invalidation)).value == "stale"
    assert await cache.get("k") is MISS
    fresh, _ = computing("fresh")
    await cache.get_or_compute("k", fresh)
    assert await cache.get("k") == "fresh"


async def test_values_round_trip_as_json(harness: Harness) -> None:
    cache = await harness.cache()
    value = {
        "nested": {"list": [1, 2.5, "x", None, True], "deep": {"a": {"b": [{"c": -0.1}]}}},
        "floats": [0.1, 1e-300, 1.7976931348623157e308, 123456789.123456789],
        "text": "naïve ✓",
        "tuple": (1, 2),
        "array": np.array([[1.0, 2.5], [3.0, 4.0]]),
    }
    await cache.set("k", value)
    got = await cache.get("k")
    assert got["nested"] == value["nested"]
    assert got["floats"] == value["floats"]
    assert got["text"] == value["text"]
    assert got["tuple"] == [1, 2]
    assert got["array"] == [[1.0, 2.5], [3.0, 4.0]]  # numpy arrays come back as lists


async def test_returned_values_are_copies(harness: Harness) -> None:
    cache = await harness.cache()
    await cache.set("k", {"items": [1]})
    got = await cache.get("k")
    got["items"].append(2)
    assert await cache.get("k") == {"items": [1]}


async def test_a_value_that_is_not_json_data_is_reported_not_raised(harness: Harness) -> None:
    cache = await harness.cache()
    assert not await cache.set("k", {"model": object()})
    assert await cache.get("k") is MISS
    [(category, error)] = harness.observer.errors
    assert category is Category.INTERNAL
    assert isinstance(error, TypeError)


async def test_get_many_and_set_many(harness: Harness) -> None:
    cache = await harness.cache("scores")
    assert await cache.set_many([("p1", 0.1), ("p2", 0.2)]) == 2
    assert await cache.get_many(["p1", "missing", "p2"]) == [0.1, MISS, 0.2]
    assert (cache.stats().hits, cache.stats().misses) == (2, 1)


async def test_get_or_compute_many_computes_only_the_missing(harness: Harness) -> None:
    cache = await harness.cache("scores")
    await cache.set("p2", 0.2)
    asked: list[list[int]] = []

    async def score(missing: list[int]) -> list[tuple[Any, bool]]:
        asked.append(missing)
        return [(0.1, True), (0.0, False)]  # p3 got a fallback: not cacheable

    values = await cache.get_or_compute_many(["p1", "p2", "p3"], score)
    assert values == [0.1, 0.2, 0.0]
    assert asked == [[0, 2]]
    assert await cache.get_many(["p1", "p2", "p3"]) == [0.1, 0.2, MISS]


@dataclass
class GatedComputation:
    """A computation that waits for ``release`` and counts its calls: the single-flight
    scaffold of the tests below."""

    outcome: Any
    """The value it returns, or an exception it raises."""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    calls: int = 0

    async def __call__(self) -> tuple[Any, bool]:
        self.calls += 1
        await self.release.wait()
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome, True

    async def joined_by(self, harness: Harness, cache: Any, count: int,
                        ) -> list[asyncio.Task[Any]]:
        """``count`` callers of ``get_or_compute("k")``, returned once all have joined."""
        all_waiting = harness.observer.misses_reach(count)
        tasks = [asyncio.create_task(cache.get_or_compute("k", self)) for _ in range(count)]
        await all_waiting.wait()
        return tasks


async def test_concurrent_misses_compute_once(harness: Harness) -> None:
    cache = await harness.cache()
    computation = GatedComputation({"discount_pct": 5.0})
    tasks = await computation.joined_by(harness, cache, 100)
    computation.release.set()
    results = await asyncio.gather(*tasks)
    assert computation.calls == 1
    assert all(r.value == {"discount_pct": 5.0} for r in results)
    statuses = [r.status for r in results]
    assert statuses.count(CacheStatus.MISS) == 1
    assert statuses.count(CacheStatus.SHARED) == 99
    assert await cache.get("k") == {"discount_pct": 5.0}


async def test_a_failed_computation_reaches_every_waiter_and_is_not_stored(
    harness: Harness,
) -> None:
    cache = await harness.cache()
    computation = GatedComputation(RuntimeError("model exploded"))
    tasks = await computation.joined_by(harness, cache, 100)
    computation.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert computation.calls == 1
    assert all(isinstance(r, RuntimeError) and str(r) == "model exploded" for r in results)
    assert await cache.get("k") is MISS
    ok, ok_calls = computing("recovered")
    assert (await cache.get_or_compute("k", ok)).value == "recovered"
    assert len(ok_calls) == 1


async def test_a_cancelled_waiter_does_not_cancel_the_computation(harness: Harness) -> None:
    cache = await harness.cache()
    computation = GatedComputation("value")
    leader, *waiters = await computation.joined_by(harness, cache, 4)
    leader.cancel()  # the caller that started the computation gives up
    waiters[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    computation.release.set()
    with pytest.raises(asyncio.CancelledError):
        await waiters[0]
    results = await asyncio.gather(*waiters[1:])
    assert [r.value for r in results] == ["value", "value"]
    assert computation.calls == 1
    assert await cache.get("k") == "value"


async def test_single_flight_is_per_key(harness: Harness) -> None:
    cache = await harness.cache()
    calls: list[str] = []

    def model(name: str) -> Callable[[], Awaitable[tuple[Any, bool]]]:
        async def compute() -> tuple[Any, bool]:
            calls.append(name)
            await asyncio.sleep(0)
            return name, True

        return compute

    results = await asyncio.gather(
        cache.get_or_compute("a", model("a")), cache.get_or_compute("b", model("b"))
    )
    assert [r.value for r in results] == ["a", "b"]
    assert sorted(calls) == ["a", "b"]


@pytest.mark.parametrize("harness", [BACKENDS["memory"]], indirect=True)
async def test_memory_evictions_are_counted(harness: Harness) -> None:
    """memory:// only: on Redis, eviction is the server's maxmemory-policy."""
    cache = await harness.cache(max_entries=2)
    for key in ("a", "b", "c"):
        await cache.set(key, key)
    assert await cache.get_many(["a", "b", "c"]) == [MISS, "b", "c"]
    assert cache.stats().evictions == 1
    assert harness.observer.evictions == 1
    assert cache.breaker_state is None


@pytest.mark.parametrize("harness", [BACKENDS["redis"]], indirect=True)
async def test_replicas_share_entries_and_invalidation(harness: Harness) -> None:
    """Redis only: memory:// is per process by design."""
    other_replica_connections = Connections()
    try:
        other = ResultCache(Cache(url=harness.url), namespace=harness.namespace, scope="response")
        await other.open(other_replica_connections)
        cache = await harness.cache()
        await cache.set("k", "shared")
        assert await other.get("k") == "shared"
        assert await other.invalidate()
        # this replica has not seen the new generation yet: its write still lands in it
        assert await cache.set("k2", "written after the invalidation")
        assert await other.get("k2") == "written after the invalidation"
        assert await cache.get("k") is MISS
        await cache.set("k", "after")
        assert await other.get("k") == "after"
        await other.aclose()
    finally:
        await other_replica_connections.aclose()


async def test_an_unopened_cache_says_so() -> None:
    cache = ResultCache(Cache(), namespace="svc")
    with pytest.raises(RuntimeError, match="not open"):
        await cache.get("k")


def test_names_are_checked() -> None:
    with pytest.raises(ValueError):
        ResultCache(Cache(), namespace="svc", scope="a:b")
    with pytest.raises(ValueError):
        ResultCache(Cache(), namespace="{svc}")
    assert ResultCache(Cache(), namespace="svc", default_url="redis://h:1/0").url == (
        "redis://h:1/0"
    )
    assert ResultCache(Cache(url="memory://"), namespace="svc", default_url="redis://h").url == (
        "memory://"
    )
