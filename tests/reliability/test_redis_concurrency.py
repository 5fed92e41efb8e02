"""The project's Redis connections (``buttress.backends.redis.connect_redis``) under
cancellation and contention, against a real redis-server this module starts.

- 10,000 calls cancelled in flight (the way a stage's deadline cancels them) never leave a
  reply that a later caller reads as its own: redis-py #2665, the reason redis-py is pinned.
- A pool with ten times more callers than connections makes them wait for a connection, within
  the deadline, instead of failing or opening more.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from buttress.backends.redis import connect_redis
from buttress.backends.url import parse_backend_url
from tests.support import PrivateRedis

pytestmark = [pytest.mark.redis, pytest.mark.slow]

CANCELLED_GOAL = 10_000
KEYS = 500


@pytest.fixture
async def client(private_redis: PrivateRedis) -> AsyncIterator[Redis]:
    redis = connect_redis(parse_backend_url(f"{private_redis.url}?max_connections=16"
                                            f"&timeout=2s"))
    try:
        yield redis
    finally:
        await redis.aclose()


def value_of(index: int) -> bytes:
    return f"value-{index}-".encode() * (1 + index % 50)  # replies of different lengths


async def test_cancelled_calls_never_hand_their_reply_to_another_caller(client: Redis) -> None:
    await client.mset({f"k{i}": value_of(i) for i in range(KEYS)})
    rng = random.Random(2665)
    cancelled = answered = 0
    wrong: list[tuple[int, bytes | None]] = []

    async def read(index: int) -> None:
        nonlocal answered
        got = await client.get(f"k{index}")
        if got != value_of(index):
            wrong.append((index, got))
        answered += 1

    started = time.perf_counter()
    while cancelled < CANCELLED_GOAL:
        tasks = [asyncio.ensure_future(read(rng.randrange(KEYS))) for _ in range(200)]
        for _ in range(rng.randrange(1, 4)):  # let some commands be sent, some replies read
            await asyncio.sleep(0)
        for task in tasks:
            if not task.done() and rng.random() < 0.7:
                task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        cancelled += sum(isinstance(o, asyncio.CancelledError) for o in outcomes)
        errors = [o for o in outcomes if isinstance(o, Exception)]
        assert not errors, errors[:3]
        # whoever comes next must read exactly its own reply
        for index in rng.sample(range(KEYS), 5):
            await read(index)
    seconds = time.perf_counter() - started
    print(f"redis: {cancelled} calls cancelled in flight, {answered} answered, "
          f"{len(wrong)} wrong replies, {seconds:.1f}s")
    assert not wrong, wrong[:5]
    assert answered > 1_000
    # and the connections are all usable and back in the pool
    assert await asyncio.gather(*(client.get(f"k{i}") for i in range(64))) == [
        value_of(i) for i in range(64)]


async def test_ten_times_more_callers_than_connections_wait_within_the_deadline(
    private_redis: PrivateRedis,
) -> None:
    connections, callers, hold = 4, 40, 0.05
    deadline = 3.0  # the pool's wait for a connection (``timeout=``), and each caller's budget
    redis = connect_redis(parse_backend_url(
        f"{private_redis.url}?max_connections={connections}&timeout={deadline}s"))
    waited: list[float] = []

    async def caller(index: int) -> bytes | None:
        started = time.perf_counter()
        # BLPOP on an empty list holds its connection for `hold` seconds, without blocking
        # the server for the others
        async with asyncio.timeout(deadline):
            reply = await redis.blpop([f"empty-{index}"], timeout=hold)
        waited.append(time.perf_counter() - started)
        return reply  # type: ignore[no-any-return]

    try:
        started = time.perf_counter()
        replies = await asyncio.gather(*(caller(i) for i in range(callers)))
        seconds = time.perf_counter() - started
        clients = await redis.client_list()
    finally:
        await redis.aclose()
    assert replies == [None] * callers  # every caller served (BLPOP timed out: empty list)
    # they queued for the 4 connections: 10 rounds of `hold`, not one
    assert seconds >= (callers / connections) * hold * 0.9
    assert max(waited) < deadline
    assert len(clients) <= connections + 1  # the pool never grew (+1: CLIENT LIST's own)
    print(f"redis pool: {callers} callers on {connections} connections, all served in "
          f"{seconds:.2f}s, longest wait {max(waited):.2f}s (deadline {deadline}s)")
