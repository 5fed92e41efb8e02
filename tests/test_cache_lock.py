"""``Cache(lock=...)`` on Redis: replicas elect one of them to compute a missing key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from buttress.backends import Connections
from buttress.cache import Cache, CacheStatus, ResultCache
from tests.support import unique_prefix
from tests.test_cache_contract import RecordingObserver

pytestmark = pytest.mark.redis


class Replicas:
    """Two replicas of one service: own connection pools, one Redis, one namespace."""

    def __init__(self, url: str, lock: str) -> None:
        self.url = url
        self.namespace = unique_prefix("lock")
        self.pools = [Connections(), Connections()]
        self.observers = [RecordingObserver(), RecordingObserver()]
        self.caches = [
            ResultCache(Cache(url=url, lock=lock), namespace=self.namespace, observer=observer)
            for observer in self.observers
        ]

    async def open(self) -> None:
        for cache, pool in zip(self.caches, self.pools, strict=True):
            await cache.open(pool)

    async def close(self) -> None:
        client = self.pools[0].redis(self.url)
        keys = [
            k async for k in client.scan_iter(match=f"buttress:{{{self.namespace}}}:*", count=1000)
        ]
        if keys:
            await client.delete(*keys)
        for cache, pool in zip(self.caches, self.pools, strict=True):
            await cache.aclose()
            await pool.aclose()


@pytest.fixture
async def replicas(
    machine_redis_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Replicas]:
    lock = getattr(request, "param", "2s")
    r = Replicas(machine_redis_url, lock)
    await r.open()
    yield r
    await r.close()


class Model:
    def __init__(self, name: str) -> None:
        self.name = name
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.calls = 0

    async def __call__(self) -> tuple[Any, bool]:
        self.calls += 1
        self.started.set()
        await self.release.wait()
        return f"computed by {self.name}", True


async def test_one_replica_computes_the_others_wait_for_its_answer(replicas: Replicas) -> None:
    a, b = replicas.caches
    model_a, model_b = Model("a"), Model("b")
    b_missed = replicas.observers[1].misses_reach(1)
    first = asyncio.create_task(a.get_or_compute("k", model_a))
    await model_a.started.wait()  # a holds the lock now
    second = asyncio.create_task(b.get_or_compute("k", model_b))
    await b_missed.wait()  # b read the key before a stored it; it will not compute
    model_a.release.set()
    results = await asyncio.gather(first, second)
    assert [r.value for r in results] == ["computed by a", "computed by a"]
    assert [r.status for r in results] == [CacheStatus.MISS, CacheStatus.SHARED]
    assert (model_a.calls, model_b.calls) == (1, 0)


@pytest.mark.parametrize("replicas", ["200ms"], indirect=True)
async def test_a_replica_stops_waiting_when_the_lock_expires(replicas: Replicas) -> None:
    a, b = replicas.caches
    stuck, model_b = Model("a"), Model("b")
    model_b.release.set()
    first = asyncio.create_task(a.get_or_compute("k", stuck))
    await stuck.started.wait()
    lookup = await asyncio.wait_for(b.get_or_compute("k", model_b), timeout=2.0)
    assert lookup == ("computed by b", CacheStatus.MISS)
    stuck.release.set()
    await first


async def test_the_lock_is_released_when_the_computation_fails(replicas: Replicas) -> None:
    a, b = replicas.caches

    async def broken() -> tuple[Any, bool]:
        raise RuntimeError("model exploded")

    with pytest.raises(RuntimeError):
        await a.get_or_compute("k", broken)
    model_b = Model("b")
    model_b.release.set()
    # b takes the free lock and computes at once (it would wait 2 s behind a leaked lock)
    lookup = await asyncio.wait_for(b.get_or_compute("k", model_b), timeout=1.0)
    assert lookup == ("computed by b", CacheStatus.MISS)


@pytest.mark.parametrize("replicas", ["5s"], indirect=True)
async def test_a_waiter_takes_over_when_the_holder_stores_nothing(replicas: Replicas) -> None:
    a, b = replicas.caches
    release = asyncio.Event()
    started = asyncio.Event()

    async def fallback() -> tuple[Any, bool]:
        started.set()
        await release.wait()
        return "fallback", False  # never stored

    model_b = Model("b")
    model_b.release.set()
    b_missed = replicas.observers[1].misses_reach(1)
    first = asyncio.create_task(a.get_or_compute("k", fallback))
    await started.wait()
    second = asyncio.create_task(b.get_or_compute("k", model_b))
    await b_missed.wait()
    release.set()
    assert (await first).value == "fallback"
    # b takes the released lock at its next poll, long before the 5 s lock time
    assert await asyncio.wait_for(second, timeout=1.0) == ("computed by b", CacheStatus.MISS)
