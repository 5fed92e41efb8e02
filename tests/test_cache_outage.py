"""A dead or hung Redis: every call is a miss, bounded by the timeout, then by the breaker."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from buttress.backends import Connections
from buttress.cache import MISS, Cache, CacheStatus, CacheUnavailable, ResultCache
from buttress.resilience.breaker import Breaker
from buttress.resilience.categories import Category
from tests.support import FakeClock, PrivateRedis, unique_prefix
from tests.test_cache_contract import RecordingObserver

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TIMEOUT = 0.05  # ?timeout=50ms
BOUND = 0.5  # one call may take the timeout plus scheduling noise on a shared machine, no more
OPEN_CALL = 0.005  # with the breaker open a call makes no network round trip


class Outage:
    def __init__(self, server: PrivateRedis) -> None:
        self.server = server
        self.clock = FakeClock()
        self.observer = RecordingObserver()
        self.connections = Connections()
        self.cache = ResultCache(
            Cache(url=f"{server.url}?timeout=50ms",
                  breaker=Breaker(consecutive_failures=3, open_for="2s")),
            namespace=unique_prefix("outage"),
            observer=self.observer,
            clock=self.clock,
        )


@pytest.fixture
async def outage(private_redis: PrivateRedis) -> AsyncIterator[Outage]:
    o = Outage(private_redis)
    await o.cache.open(o.connections)
    yield o
    await o.cache.aclose()
    await o.connections.aclose()


async def timed(call: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = await call
    return result, time.perf_counter() - start


async def answer() -> tuple[Any, bool]:
    return "computed", True


async def test_stopped_redis_is_a_miss_then_the_breaker_opens_then_hits_resume(
    outage: Outage,
) -> None:
    cache = outage.cache
    assert await cache.set("k", "before")
    assert await cache.get("k") == "before"

    outage.server.stop()
    for _ in range(3):  # consecutive_failures=3: each one bounded by the timeout
        value, elapsed = await timed(cache.get("k"))
        assert value is MISS
        assert elapsed < BOUND
    assert cache.breaker_state == "open"
    categories = {category for category, _ in outage.observer.errors}
    assert categories == {Category.CACHE_UNAVAILABLE}

    errors_before = len(outage.observer.errors)
    for _ in range(20):  # open: immediate miss, no network call
        value, elapsed = await timed(cache.get("k"))
        assert value is MISS
        assert elapsed < OPEN_CALL
        stored, elapsed = await timed(cache.set("k", "during"))
        assert stored is False
        assert elapsed < OPEN_CALL
        lookup, elapsed = await timed(cache.get_or_compute("k", answer))
        assert lookup == ("computed", CacheStatus.UNAVAILABLE)
        assert elapsed < OPEN_CALL
    assert not await cache.invalidate()
    reported = outage.observer.errors[errors_before:]
    assert len(reported) >= 60
    assert all(category is Category.CACHE_UNAVAILABLE for category, _ in reported)
    assert all(isinstance(error, CacheUnavailable) for _, error in reported)

    outage.server.start()
    assert await cache.get("k") is MISS  # still open: the breaker has not let a probe through
    outage.clock.advance(2.0)
    assert await cache.set("k", "after")  # the half-open probe succeeds and closes the breaker
    assert cache.breaker_state == "closed"
    assert await cache.get("k") == "after"
    assert (await cache.get_or_compute("k", answer)).status is CacheStatus.HIT


async def test_hung_redis_costs_each_call_its_timeout_until_the_breaker_opens(
    outage: Outage,
) -> None:
    cache = outage.cache
    assert await cache.set("k", "before")
    process = outage.server.process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)  # accepts connections, never answers
    try:
        for _ in range(3):
            lookup, elapsed = await timed(cache.get_or_compute("k", answer))
            assert lookup == ("computed", CacheStatus.UNAVAILABLE)
            assert TIMEOUT * 0.8 < elapsed < BOUND
        assert cache.breaker_state == "open"
        for _ in range(20):
            value, elapsed = await timed(cache.get("k"))
            assert value is MISS
            assert elapsed < OPEN_CALL
    finally:
        os.kill(process.pid, signal.SIGCONT)
    outage.clock.advance(2.0)
    assert await cache.get("k") == "before"  # the probe's hit closes the breaker
    assert cache.breaker_state == "closed"


async def test_a_failed_probe_opens_the_breaker_again(outage: Outage) -> None:
    cache = outage.cache
    outage.server.stop()
    for _ in range(3):
        await cache.get("k")
    assert cache.breaker_state == "open"
    outage.clock.advance(2.0)
    assert await cache.get("k") is MISS  # the probe fails
    assert cache.breaker_state == "open"
    outage.server.start()
    outage.clock.advance(2.0)
    assert await cache.set("k", 1)
    assert await cache.get("k") == 1


async def test_pooled_connections_killed_with_redis_are_replaced_at_once(
    private_redis: PrivateRedis,
) -> None:
    """Redis killed (-9) and restarted: every pooled connection is dead. Each is retried once
    on a fresh connection, so the next requests hit Redis instead of failing one by one for
    as long as dead connections remain in the pool (16-25 s of fallbacks before)."""
    connections = Connections()
    observer = RecordingObserver()
    cache = ResultCache(Cache(url=f"{private_redis.url}?timeout=250ms",
                              breaker=Breaker(consecutive_failures=3, open_for="30s")),
                        namespace=unique_prefix("restart"), observer=observer)
    await cache.open(connections)
    try:
        client = connections.redis(private_redis.url)  # the pool the cache uses
        await asyncio.gather(*(client.set(f"warm{i}", i) for i in range(16)))  # open several
        assert await cache.set("k", "before")
        assert len(list(client.connection_pool._get_free_connections())) > 1

        private_redis.stop()  # SIGKILL
        private_redis.start()  # same port, empty
        restarted = time.monotonic()
        for round_ in range(3):  # sequential and concurrent uses of the dead connections
            assert await cache.set(f"k{round_}", "after")
            assert await cache.get(f"k{round_}") == "after"
            assert await asyncio.gather(*(client.set(f"c{i}", i) for i in range(16)))
        assert time.monotonic() - restarted < 1.0
        assert observer.errors == []  # no request fell back (cache_unavailable)
        assert cache.breaker_state == "closed"
    finally:
        await cache.aclose()
        await connections.aclose()
