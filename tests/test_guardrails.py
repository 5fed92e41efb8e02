"""The guardrail contract, the same tests on ``memory://`` and ``redis://``.

Time is a fake clock handed to the evaluator: with memory it is the store's clock; with Redis it
replaces the server's TIME inside the Lua script (a test-only override — production passes
none, see test_guardrails_redis.py). Either way window edges are crossed without sleeping.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from buttress.backends import Connections
from buttress.guardrails import FixedWindow, Guardrail, Guardrails, SlidingWindow
from buttress.guardrails.memory import MemoryStore
from buttress.resilience.categories import Category
from tests.support import (
    MACHINE_REDIS_URL,
    SENTINEL_URL_TEMPLATE,
    FakeClock,
    matrix_url,
    unique_prefix,
)

Order = dict[str, Any]


def hour_aligned_clock() -> FakeClock:
    """Seconds since the epoch, on an hour boundary, so windows line up with the test."""
    return FakeClock(float(math.ceil(time.time() / 3600) * 3600 + 3600))


@dataclass
class Backend:
    url: str
    namespace: str
    clock: FakeClock
    connections: Connections

    async def guardrails(self, guards: Sequence[Guardrail]) -> Guardrails:
        evaluator = Guardrails(guards, self.url, self.namespace, clock=self.clock)
        await evaluator.open(self.connections)
        return evaluator


@contextlib.asynccontextmanager
async def open_backend(url: str) -> AsyncIterator[Backend]:
    """A fresh namespace on ``url``; with Redis, its keys are deleted afterwards."""
    namespace = unique_prefix("guardrails")
    connections = Connections()
    try:
        yield Backend(url, namespace, hour_aligned_clock(), connections)
    finally:
        if url.startswith("redis"):
            client = connections.redis(url)
            keys = [k async for k in client.scan_iter(match=f"buttress:{{{namespace}}}:*")]
            if keys:
                await client.delete(*keys)
        await connections.aclose()


@pytest.fixture(params=[
    pytest.param("memory://", id="memory"),
    pytest.param(MACHINE_REDIS_URL, id="redis", marks=pytest.mark.redis),
    pytest.param(SENTINEL_URL_TEMPLATE, id="sentinel", marks=[pytest.mark.redis, pytest.mark.slow]),
])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    url = matrix_url(request.param, request)
    async with open_backend(url) as opened:
        yield opened


def order(user: str | None = "u1", value: float = 0.0) -> Order:
    return {"user": user, "value": value}


def value_of(request: Order, prediction: float) -> float:
    return prediction


def user_of(request: Order) -> str | None:
    return request["user"]


async def admitted(guardrails: Guardrails, *costs: float, user: str | None = "u1") -> list[bool]:
    decisions = await guardrails.admit_many([(order(user), cost) for cost in costs])
    return [d.admitted for d in decisions]


async def test_fixed_window_counts_then_opens_a_new_window(backend: Backend) -> None:
    g = await backend.guardrails([FixedWindow("orders", 3, "1min")])
    assert await admitted(g, 0, 0) == [True, True]
    backend.clock.advance(59.999)
    decision = await g.admit(order(), 0)
    assert decision.admitted
    refused = await g.admit(order(), 0)
    assert not refused.admitted
    assert refused.refused_by == ("orders",)
    assert refused.category is Category.GUARDRAIL_EXCEEDED
    assert not refused.unavailable
    backend.clock.advance(0.001)  # exactly the next clock minute
    assert await admitted(g, 0, 0, 0, 0) == [True, True, True, False]


async def test_fixed_window_admits_up_to_twice_its_limit_across_an_edge(backend: Backend) -> None:
    """Documented, not a bug: a burst just before and just after an edge both fit."""
    g = await backend.guardrails([FixedWindow("orders", 3, "1min")])
    backend.clock.advance(59.999)
    assert await admitted(g, 0, 0, 0, 0) == [True, True, True, False]
    backend.clock.advance(0.001)
    assert await admitted(g, 0, 0, 0, 0) == [True, True, True, False]


async def test_sliding_window_counts_over_any_interval_of_its_length(backend: Backend) -> None:
    g = await backend.guardrails([SlidingWindow("orders", 3, "1min")])
    backend.clock.advance(30)  # mid-window: a fixed window would reopen in 30 s
    assert await admitted(g, 0) == [True]
    backend.clock.advance(20)
    assert await admitted(g, 0, 0) == [True, True]
    backend.clock.advance(39.999)  # the first admission is 59.999 s old: still counts
    assert await admitted(g, 0) == [False]
    backend.clock.advance(0.001)  # now it is exactly one window old: it no longer counts
    assert await admitted(g, 0, 0) == [True, False]
    backend.clock.advance(20)  # the two at +50 s expire
    assert await admitted(g, 0, 0, 0) == [True, True, False]


async def test_sliding_window_has_no_edge_burst(backend: Backend) -> None:
    g = await backend.guardrails([SlidingWindow("orders", 3, "1min")])
    backend.clock.advance(59.999)
    assert await admitted(g, 0, 0, 0) == [True, True, True]
    backend.clock.advance(0.001)
    assert await admitted(g, 0) == [False]
    backend.clock.advance(59.999)
    assert await admitted(g, 0, 0, 0, 0) == [True, True, True, False]


@pytest.mark.parametrize("kind", [FixedWindow, SlidingWindow])
async def test_value_sums_with_float_costs_are_exact(
    backend: Backend, kind: type[Guardrail]
) -> None:
    g = await backend.guardrails([kind("value", 100, "1min", measure=value_of)])
    assert await admitted(g, *[0.1] * 1000) == [True] * 1000  # 1,000 x 0.1 is exactly 100
    assert await admitted(g, 0.000001) == [False]
    [snapshot] = await g.snapshot()
    assert snapshot.usage[0].used == 100.0
    assert snapshot.usage[0].remaining == 0.0


async def test_requests_are_admitted_in_order_and_a_refusal_spends_nothing(
    backend: Backend,
) -> None:
    g = await backend.guardrails([SlidingWindow("value", 100, "1min", measure=value_of)])
    # 45.5 fits, 60 would not (refused, spends nothing), 54.5 then fills the budget exactly.
    assert await admitted(g, 45.5, 60, 54.5, 0.01) == [True, False, True, False]


async def test_a_zero_cost_does_not_count_and_is_always_admitted(backend: Backend) -> None:
    g = await backend.guardrails([FixedWindow("value", 10, "1min", measure=value_of)])
    assert await admitted(g, 10, 0, 0.5, 0) == [True, True, False, True]


async def test_keyed_guardrails_count_each_key_apart(backend: Backend) -> None:
    g = await backend.guardrails([FixedWindow("orders_per_user", 2, "1h", key=user_of)])
    assert await admitted(g, 0, 0, 0, user="alice") == [True, True, False]
    assert await admitted(g, 0, 0, 0, user="bob") == [True, True, False]
    # key None: the guardrail does not apply (e.g. an anonymous user), so nothing limits it
    assert await admitted(g, 0, 0, 0, user=None) == [True, True, True]
    backend.clock.advance(3600)
    assert await admitted(g, 0, user="alice") == [True]


async def test_keyed_sliding_windows_expire_each_keys_own_entries(backend: Backend) -> None:
    g = await backend.guardrails(
        [SlidingWindow("value_per_user", 10, "1min", measure=value_of, key=user_of)]
    )
    assert await admitted(g, 10, user="alice") == [True]
    backend.clock.advance(30)
    assert await admitted(g, 4, user="bob") == [True]
    backend.clock.advance(30)  # alice's entry leaves the window while only bob is checked
    assert await admitted(g, 6, 0.5, user="bob") == [True, False]
    assert await admitted(g, 10, user="alice") == [True]
    backend.clock.advance(30)  # bob's 4 leaves, his 6 stays
    assert await admitted(g, 4, 0.01, user="bob") == [True, False]


async def test_a_request_is_admitted_only_if_it_fits_every_guardrail(backend: Backend) -> None:
    g = await backend.guardrails(
        [
            FixedWindow("orders_per_user", 2, "1h", key=user_of),
            SlidingWindow("value", 100, "1min", measure=value_of),
        ]
    )
    alice, bob, carol = order("alice"), order("bob"), order("carol")
    decisions = await g.admit_many(
        [
            (alice, 60.0),  # in: alice 1/2, value 60
            (alice, 30.0),  # in: alice 2/2, value 90
            (alice, 5.0),  # out by orders_per_user: spends no value
            (bob, 10.0),  # in: value exactly 100 (alice's refused 5 was not spent)
            (carol, 0.5),  # out by value: carol's count is not spent either
            (alice, 1.0),  # out by both
        ]
    )
    assert [d.admitted for d in decisions] == [True, True, False, True, False, False]
    assert decisions[2].refused_by == ("orders_per_user",)
    assert decisions[4].refused_by == ("value",)
    assert decisions[5].refused_by == ("orders_per_user", "value")
    snapshot = {s.name: s for s in await g.snapshot()}
    assert snapshot["value"].usage[0].used == 100.0
    per_user = {u.key: u.used for u in snapshot["orders_per_user"].usage}
    assert per_user == {"alice": 2.0, "bob": 1.0}  # carol spent nothing, so is not listed
    backend.clock.advance(60)  # value frees up; carol's count was never spent
    assert (await g.admit(carol, 1.0)).admitted


async def test_non_string_keys_are_turned_into_strings(backend: Backend) -> None:
    g = await backend.guardrails([FixedWindow("per_user", 1, "1h", key=lambda r: r["id"])])
    decisions = await g.admit_many([({"id": 42}, None), ({"id": "42"}, None), ({"id": 7}, None)])
    assert [d.admitted for d in decisions] == [True, False, True]


async def test_keys_may_hold_any_characters(backend: Backend) -> None:
    g = await backend.guardrails(
        [SlidingWindow("value_per_key", 10, "1min", measure=value_of, key=user_of)]
    )
    odd = ["", "a:b:c", "Zoë 🎯", "{braces}", "1:2"]
    assert all(d.admitted for d in await g.admit_many([(order(k), 6.0) for k in odd]))
    assert [d.admitted for d in await g.admit_many([(order(k), 4.5) for k in odd])] == [
        False
    ] * len(odd)
    [snapshot] = await g.snapshot()
    assert sorted(u.key or "" for u in snapshot.usage) == sorted(odd)
    backend.clock.advance(60)
    assert all(d.admitted for d in await g.admit_many([(order(k), 10.0) for k in odd]))


async def test_a_failing_measure_refuses_only_its_request(backend: Backend) -> None:
    def fragile(request: Order, prediction: float) -> float:
        if prediction < 0:
            raise ValueError("negative discount")
        return prediction

    g = await backend.guardrails([SlidingWindow("value", 10, "1min", measure=fragile)])
    decisions = await g.admit_many([(order(), 4.0), (order(), -1.0), (order(), 6.0)])
    assert [d.admitted for d in decisions] == [True, False, True]
    assert decisions[1].category is Category.INTERNAL
    assert decisions[1].error is not None
    assert "negative discount" in decisions[1].error
    assert decisions[1].refused_by == ("value",)


async def test_a_measure_returning_a_negative_cost_is_an_error(backend: Backend) -> None:
    g = await backend.guardrails([SlidingWindow("value", 10, "1min", measure=value_of)])
    decision = await g.admit(order(), -5.0)
    assert not decision.admitted
    assert decision.category is Category.INTERNAL
    assert await admitted(g, 10) == [True]  # the bad one gave no budget back


async def test_set_limit_applies_at_once_and_none_restores_the_declared_one(
    backend: Backend,
) -> None:
    g = await backend.guardrails([SlidingWindow("orders", 5, "1min")])
    assert await admitted(g, 0, 0) == [True, True]
    await g.set_limit("orders", 2)
    assert await admitted(g, 0) == [False]
    await g.set_limit("orders", 3.5)
    assert await admitted(g, 0, 0) == [True, False]
    await g.set_limit("orders", None)
    assert await admitted(g, 0, 0, 0) == [True, True, False]
    [snapshot] = await g.snapshot()
    assert snapshot.limit == 5.0
    with pytest.raises(KeyError, match="no guardrail named 'nope'"):
        await g.set_limit("nope", 1)
    with pytest.raises(ValueError):
        await g.set_limit("orders", -1)


async def test_snapshot_reports_globals_and_only_the_busiest_keys(backend: Backend) -> None:
    g = await backend.guardrails(
        [
            FixedWindow("orders_per_user", 10, "1h", key=user_of),
            SlidingWindow("value", 1000, "1min", measure=value_of),
        ]
    )
    empty = {s.name: s for s in await g.snapshot()}
    assert empty["value"].usage[0].used == 0.0
    assert empty["value"].usage[0].remaining == 1000.0
    assert empty["orders_per_user"].usage == ()
    items = [(order(f"user{n}"), 1.5) for n in range(8) for _ in range(n + 1)]
    assert all(d.admitted for d in await g.admit_many(items))
    report = {s.name: s for s in await g.snapshot(top=3)}
    value = report["value"]
    assert (value.kind, value.window, value.limit, value.keyed) == ("sliding", 60.0, 1000.0, False)
    assert value.usage[0].key is None
    assert value.usage[0].used == pytest.approx(1.5 * 36)
    assert value.usage[0].remaining == pytest.approx(1000 - 1.5 * 36)
    per_user = report["orders_per_user"]
    assert per_user.keyed
    assert [(u.key, u.used, u.remaining) for u in per_user.usage] == [
        ("user7", 8.0, 2.0),
        ("user6", 7.0, 3.0),
        ("user5", 6.0, 4.0),
    ]
    assert per_user.as_dict()["usage"][0] == {"key": "user7", "used": 8.0, "remaining": 2.0}
    backend.clock.advance(3600)  # a new fixed window: nobody has used anything
    later = {s.name: s for s in await g.snapshot()}
    assert later["orders_per_user"].usage == ()
    assert later["value"].usage[0].used == 0.0


async def test_nothing_applies_means_no_backend_call_and_admission(backend: Backend) -> None:
    g = await backend.guardrails([FixedWindow("per_user", 0, "1h", key=user_of)])
    assert await g.admit_many([]) == []
    assert await admitted(g, 1, 2, user=None) == [True, True]
    assert await admitted(g, 1, user="alice") == [False]  # a limit of 0 refuses everything


async def test_admitting_before_open_is_an_error() -> None:
    g = Guardrails([FixedWindow("n", 1, "1h")])
    with pytest.raises(RuntimeError, match="open"):
        await g.admit(order(), 0)


async def test_memory_sweeps_expired_keys() -> None:
    clock = hour_aligned_clock()
    guards = [
        FixedWindow("per_user", 1, "1min", key=user_of),
        SlidingWindow("value_per_user", 5, "30s", measure=value_of, key=user_of),
    ]
    g = Guardrails(guards, "memory://", clock=clock)
    await g.open()
    await g.admit_many([(order(f"user{n}"), 1.0) for n in range(500)])
    store = g._memory
    assert isinstance(store, MemoryStore)
    assert store.key_count() == 1000
    clock.advance(60)
    await g.admit(order("someone"), 1.0)  # the next admission past a window sweeps
    assert store.key_count() == 2


@pytest.mark.redis
async def test_replicas_sharing_redis_share_the_limit(machine_redis_url: str) -> None:
    guards = [SlidingWindow("value", 10, "1min", measure=value_of)]
    async with open_backend(machine_redis_url) as backend:
        first, second = await backend.guardrails(guards), await backend.guardrails(guards)
        assert await admitted(first, 6) == [True]
        assert await admitted(second, 5, 4) == [False, True]
        assert await admitted(first, 0.5) == [False]
        await second.set_limit("value", 11)  # stored in Redis: the other replica applies it too
        assert await admitted(first, 1) == [True]
