"""Redis-only guardrail behaviour: outages under each fail policy, the breaker, the server's
clock on the production path, and keys that expire on their own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from buttress.backends import Connections
from buttress.guardrails import FixedWindow, Guardrails, SlidingWindow
from buttress.resilience.breaker import Breaker
from buttress.resilience.categories import Category
from tests.support import PrivateRedis, unique_prefix

pytestmark = pytest.mark.redis


def value_of(request: dict[str, str], prediction: float) -> float:
    return prediction


def user_of(request: dict[str, str]) -> str:
    return request["user"]


@pytest.fixture
async def connections() -> AsyncIterator[Connections]:
    opened = Connections()
    yield opened
    await opened.aclose()


@pytest.fixture
async def namespace(machine_redis_url: str) -> AsyncIterator[str]:
    """A namespace on the machine Redis; only its own keys are deleted afterwards."""
    name = unique_prefix("guardrails")
    yield name
    cleanup = Connections()
    client = cleanup.redis(machine_redis_url)
    keys = [k async for k in client.scan_iter(match=f"buttress:{{{name}}}:*")]
    if keys:
        await client.delete(*keys)
    await cleanup.aclose()


async def test_redis_down_fail_closed_refuses_and_fail_open_admits(
    private_redis: PrivateRedis, connections: Connections
) -> None:
    guards = [
        FixedWindow("orders_per_user", 5, "1h", key=user_of, fail="closed"),
        SlidingWindow("value", 100, "1min", measure=value_of, fail="open"),
    ]
    g = Guardrails(guards, private_redis.url + "?timeout=50ms", unique_prefix(), breaker=None)
    await g.open(connections)
    assert (await g.admit({"user": "alice"}, 10.0)).admitted
    private_redis.stop()
    started = time.perf_counter()
    both, open_only = await g.admit_many([({"user": "alice"}, 10.0), ({"user": None}, 10.0)])
    assert time.perf_counter() - started < 1.0  # bounded by the timeout, not hanging
    assert not both.admitted  # one applicable guardrail fails closed
    assert both.unavailable
    assert both.refused_by == ("orders_per_user",)
    assert both.category is Category.GUARDRAIL_UNAVAILABLE
    assert open_only.admitted  # only the fail-open guardrail applies: admitted, but reported
    assert open_only.unavailable
    assert open_only.category is Category.GUARDRAIL_UNAVAILABLE
    private_redis.start()  # an empty server again: counting resumes from nothing
    for _ in range(20):  # a fresh server on a busy machine may miss the 50 ms timeout once
        healed = await g.admit({"user": "alice"}, 10.0)
        if not healed.unavailable:
            break
    assert healed.admitted
    assert not healed.unavailable


async def test_an_open_breaker_stops_calling_a_failing_redis(
    private_redis: PrivateRedis, connections: Connections
) -> None:
    guards = [FixedWindow("orders", 5, "1h", fail="open")]
    g = Guardrails(
        guards,
        private_redis.url + "?timeout=50ms",
        unique_prefix(),
        breaker=Breaker(consecutive_failures=2, open_for="1h"),
    )
    await g.open(connections)
    private_redis.stop()
    for _ in range(2):
        assert (await g.admit({}, None)).unavailable
    private_redis.start()
    # Redis is back, but the breaker is open for an hour: it is not even asked.
    for _ in range(3):
        decision = await g.admit({}, None)
        assert decision.admitted
        assert decision.unavailable


async def test_production_path_takes_time_from_the_redis_server(
    machine_redis_url: str, namespace: str, connections: Connections
) -> None:
    g = Guardrails([SlidingWindow("orders", 5, "1min")], machine_redis_url, namespace)
    await g.open(connections)
    assert (await g.admit({}, None)).admitted
    client = connections.redis(machine_redis_url)
    seconds, micros = await client.time()
    [(member, stamp)] = await client.zrange(
        f"buttress:{{{namespace}}}:guardrail:orders:log", 0, -1, withscores=True
    )
    assert member == b"1:1000000:"  # entry 1, one request of cost 1 in millionths, global
    assert 0 <= seconds * 1e6 + micros - stamp < 5e6


@pytest.mark.slow
async def test_windows_roll_over_on_the_server_clock(
    machine_redis_url: str, namespace: str, connections: Connections
) -> None:
    """Real time, short windows: no override, the Lua script reads Redis TIME."""
    fixed = Guardrails([FixedWindow("fixed", 2, "300ms")], machine_redis_url, namespace)
    sliding = Guardrails([SlidingWindow("sliding", 2, "300ms")], machine_redis_url, namespace)
    await fixed.open(connections)
    await sliding.open(connections)
    for guard in (fixed, sliding):
        decisions = await guard.admit_many([({}, None)] * 3)
        assert [d.admitted for d in decisions] == [True, True, False]
    await asyncio.sleep(0.31)  # the point here is the server's clock, so real time must pass
    for guard in (fixed, sliding):
        decisions = await guard.admit_many([({}, None)] * 3)
        assert [d.admitted for d in decisions] == [True, True, False]


async def test_every_key_expires_and_shares_one_cluster_slot(
    machine_redis_url: str, namespace: str, connections: Connections
) -> None:
    guards = [
        FixedWindow("per_user", 3, "1h", key=user_of),
        SlidingWindow("value_per_user", 100, "1min", measure=value_of, key=user_of),
    ]
    g = Guardrails(guards, machine_redis_url, namespace)
    await g.open(connections)
    await g.admit_many([({"user": f"user{n}"}, 1.0) for n in range(20)])
    client = connections.redis(machine_redis_url)
    prefix = f"buttress:{{{namespace}}}:guardrail:"  # one hash tag: one Redis Cluster slot
    keys = sorted([k.decode() async for k in client.scan_iter(match=f"{prefix}*")])
    # however many users, a guardrail keeps one hash (and for a sliding window one log)
    assert keys == [
        prefix + "per_user:counts",
        prefix + "value_per_user:counts",
        prefix + "value_per_user:log",
    ]
    assert await client.hlen(prefix + "per_user:counts") == 20 + 1  # users + window index
    assert 0 < await client.pttl(prefix + "per_user:counts") <= 3_600_001
    for key in keys[1:]:
        assert 0 < await client.pttl(key) <= 60_001
    await g.set_limit("per_user", 50)  # the override is configuration: it has no expiry
    assert await client.pttl(prefix + "limits") == -1


async def test_sliding_counts_drop_keys_whose_entries_left_the_window(
    machine_redis_url: str, namespace: str, connections: Connections
) -> None:
    now = [1_900_000_000.0]
    guards = [SlidingWindow("value_per_user", 10, "1min", measure=value_of, key=user_of)]
    g = Guardrails(guards, machine_redis_url, namespace, clock=lambda: now[0])
    await g.open(connections)
    await g.admit_many([({"user": f"user{n}"}, 2.0) for n in range(50)])
    counts = f"buttress:{{{namespace}}}:guardrail:value_per_user:counts"
    client = connections.redis(machine_redis_url)
    assert await client.hlen(counts) == 50 + 1
    now[0] += 30
    assert (await g.admit({"user": "user0"}, 8.0)).admitted  # 2 + 8: exactly the limit
    now[0] += 30  # the first 50 entries leave the window, including user0's first
    assert (await g.admit({"user": "late"}, 1.0)).admitted
    assert set(await client.hkeys(counts)) == {b"n", b"kuser0", b"klate"}
    assert await client.zcard(f"buttress:{{{namespace}}}:guardrail:value_per_user:log") == 2
    assert not (await g.admit({"user": "user0"}, 2.01)).admitted  # its 8 still counts
