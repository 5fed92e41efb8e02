"""The Redis store's own promises: one round trip for concurrent calls, safe cancellation,
and an atomic claim of the compute lock."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from buttress.backends import Connections
from buttress.backends.coalesce import TickBatcher
from buttress.cache import MISS, Cache, ResultCache
from buttress.cache.redis import RedisStore
from tests.support import PrivateRedis, evalsha_calls, unique_prefix


@pytest.mark.redis
@pytest.mark.slow
async def test_concurrent_reads_share_one_round_trip(private_redis: PrivateRedis) -> None:
    connections = Connections()
    cache = ResultCache(Cache(url=private_redis.url), namespace=unique_prefix("tick"))
    await cache.open(connections)
    try:
        await cache.set_many([(f"k{i}", i) for i in range(100)])
        await cache.get("k0")  # learn the generation
        client = connections.redis(private_redis.url)
        before = await evalsha_calls(client)
        values = await asyncio.gather(*(cache.get(f"k{i}") for i in range(100)))
        assert values == list(range(100))
        assert await evalsha_calls(client) - before == 1
    finally:
        await cache.aclose()
        await connections.aclose()


@pytest.mark.redis
async def test_cancelled_readers_leave_no_reply_behind(machine_redis_url: str) -> None:
    connections = Connections()
    namespace = unique_prefix("cancel")
    cache = ResultCache(Cache(url=machine_redis_url), namespace=namespace, scope="s")
    await cache.open(connections)
    try:
        await cache.set_many([(f"k{i}", f"v{i}") for i in range(50)])
        for _ in range(20):
            tasks = [asyncio.create_task(cache.get(f"k{i}")) for i in range(50)]
            await asyncio.sleep(0)
            for task in tasks[::2]:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for i, result in enumerate(results):
                if not isinstance(result, asyncio.CancelledError):
                    assert result == f"v{i}"
            assert await cache.get("k7") == "v7"  # the next caller reads its own reply
    finally:
        client = connections.redis(machine_redis_url)
        keys = [k async for k in client.scan_iter(match=f"buttress:{{{namespace}}}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await cache.aclose()
        await connections.aclose()


@pytest.mark.redis
async def test_claim_returns_a_value_stored_since_the_read(machine_redis_url: str) -> None:
    connections = Connections()
    namespace = unique_prefix("claim")
    client = connections.redis(machine_redis_url)
    store = RedisStore(client, namespace=namespace, scope="response", ttl=10)
    try:
        generation, [raw] = await store.read(["k"])
        assert raw is None
        assert await store.claim("k", generation, "me", 1.0) is True
        assert await store.claim("k", generation, "other", 1.0) is False
        await store.write([(generation, "k", b'"done"')])
        assert await store.claim("k", generation, "other", 1.0) == b'"done"'
        await store.unlock("k", "other")  # not the owner: the lock stays
        assert await store.claim("k2", generation, "x", 1.0) is True
        await store.unlock("k", "me")
        assert await client.exists(f"buttress:{{{namespace}}}:cache:response:lock:k") == 0
    finally:
        keys = [k async for k in client.scan_iter(match=f"buttress:{{{namespace}}}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await connections.aclose()


async def test_tick_batcher_batches_one_iteration_and_survives_cancellation() -> None:
    batches: list[list[int]] = []

    async def double(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        await asyncio.sleep(0)
        return [2 * item for item in items]

    batcher: TickBatcher[int, int] = TickBatcher(double)
    tasks = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert batches == [[0, 1, 2, 3, 4]]
    assert isinstance(results[1], asyncio.CancelledError)
    assert [results[i] for i in (0, 2, 3, 4)] == [0, 4, 6, 8]
    assert await batcher.submit(21) == 42
    await batcher.aclose()


async def test_tick_batcher_gives_every_caller_the_error() -> None:
    async def broken(items: Sequence[int]) -> list[int]:
        raise ConnectionError("redis went away")

    batcher: TickBatcher[int, int] = TickBatcher(broken)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_tick_batcher_caps_a_batch() -> None:
    sizes: list[int] = []

    async def echo(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        return list(items)

    batcher: TickBatcher[int, int] = TickBatcher(echo, max_batch=4)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(10))) == list(range(10))
    assert sizes == [4, 4, 2]


def test_miss_reads_well() -> None:
    assert repr(MISS) == "MISS"
