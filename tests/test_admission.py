"""Admission control: the limit's state machine on a fake clock, and the door in a runtime."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

import buttress as bt
from buttress.resilience.admission import Admission, ConcurrencyLimit
from tests.support import FakeClock
from tests.test_pipeline import Query, service, serving

TARGET = 0.010  # 10 ms


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def limit(clock: FakeClock, **policy: object) -> ConcurrencyLimit:
    return Admission(TARGET, **policy).build(clock)  # type: ignore[arg-type]


def windows(limiter: ConcurrencyLimit, clock: FakeClock, *, latency: float, in_flight: int,
            count: int = 1) -> None:
    """``count`` windows of 10 samples each, every one taking ``latency``."""
    for _ in range(count):
        clock.advance(0.1)
        for _ in range(10):
            limiter.sample(latency, in_flight)


def test_starts_open_so_a_burst_on_an_idle_server_is_served(clock: FakeClock) -> None:
    assert limit(clock).limit == 1000


def test_latency_over_the_target_brings_the_limit_down_to_what_was_in_flight(
        clock: FakeClock) -> None:
    limiter = limit(clock)
    windows(limiter, clock, latency=3 * TARGET, in_flight=100)
    assert limiter.limit < 100  # straight to the concurrency that was too much, then less
    before = limiter.limit
    windows(limiter, clock, latency=3 * TARGET, in_flight=before, count=5)
    assert limiter.limit < before


def test_the_limit_settles_where_latency_meets_the_target(clock: FakeClock) -> None:
    """A server whose latency grows with concurrency past 40 in flight: the limit finds 40."""
    limiter = limit(clock)
    for _ in range(300):
        in_flight = limiter.limit
        latency = TARGET * max(0.5, in_flight / 40)
        windows(limiter, clock, latency=latency, in_flight=in_flight)
    assert 30 <= limiter.limit <= 50


def test_an_idle_server_learns_nothing(clock: FakeClock) -> None:
    limiter = limit(clock, initial_limit=50)
    windows(limiter, clock, latency=TARGET / 2, in_flight=3, count=20)
    assert limiter.limit == 50  # not grown: the traffic never tested it


def test_it_recovers_after_the_overload(clock: FakeClock) -> None:
    limiter = limit(clock)
    windows(limiter, clock, latency=10 * TARGET, in_flight=200, count=10)
    low = limiter.limit
    for _ in range(100):
        windows(limiter, clock, latency=TARGET / 2, in_flight=limiter.limit)
    assert limiter.limit > 3 * low


def test_never_below_min_nor_above_max(clock: FakeClock) -> None:
    limiter = limit(clock, initial_limit=20, min_limit=5, max_limit=30)
    windows(limiter, clock, latency=100 * TARGET, in_flight=20, count=50)
    assert limiter.limit == 5
    for _ in range(200):
        windows(limiter, clock, latency=TARGET / 10, in_flight=limiter.limit)
    assert limiter.limit == 30


@pytest.mark.parametrize("policy", [
    {"min_limit": 0}, {"initial_limit": 2000}, {"smoothing": 0.0}, {"window": "0s"},
    {"min_samples": 0},
])
def test_invalid_policies_are_refused(policy: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Admission(TARGET, **policy)  # type: ignore[arg-type]


def slow_service(*, fallback: bool = True) -> bt.Service:
    svc = service("slow")

    @svc.stage(timeout="1s", fallback={"n": -1} if fallback else bt.NO_FALLBACK)
    async def lookup(q: Query) -> dict[str, int]:
        await asyncio.sleep(0.05)
        return {"n": q.x}

    @svc.respond
    def respond(q: Query, lookup: dict[str, int]) -> dict[str, int]:
        return lookup

    return svc


async def test_past_the_limit_requests_wait_for_a_slot_in_arrival_order(tmp_path: Path) -> None:
    async with serving(slow_service(), tmp_path, max_concurrency="2", deadline="1s") as h:
        answers = await asyncio.gather(*(h.ask({"x": i}) for i in range(5)))
        assert h.runtime.door is not None
        assert (h.runtime.door.inside, h.runtime.door.waiting) == (0, 0)
    assert [(a.status, a.context.fallbacks) for a in answers] == [(200, [])] * 5
    assert [orjson.loads(a.body) for a in answers] == [{"n": i} for i in range(5)]
    assert len(h.events()) == 5


async def test_a_request_whose_wait_would_be_too_long_is_answered_at_once(
        tmp_path: Path) -> None:
    """One slot, each request holds it ~100 ms, half the 250 ms deadline may be spent
    waiting: the first waits, the ones behind it get every stage's fallback at once."""
    async with serving(slow_service(), tmp_path, max_concurrency="1", deadline="250ms") as h:
        assert h.runtime.door is not None
        h.runtime.door.limit.mean_latency = 0.1
        first = asyncio.ensure_future(h.ask({"x": 0}))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(h.ask({"x": 1}))
        await asyncio.sleep(0)
        started = time.perf_counter()
        shed = await asyncio.gather(*(h.ask({"x": i}) for i in range(2, 5)))
        shed_in = time.perf_counter() - started
        served = await asyncio.gather(first, second)
    assert [a.context.fallbacks for a in served] == [[], []]
    for answer in shed:
        assert answer.status == 200
        assert answer.body == b'{"n":-1}'
        assert answer.context.fallback_categories == ["overloaded"]
    assert shed_in < 0.05  # not after a wait: at once
    assert h.sample("buttress_fallbacks_total", stage="admission", category="overloaded") == 3
    assert len(h.events()) == 5  # one event per request, shed ones included


async def test_a_wait_that_runs_out_is_answered_as_overloaded(tmp_path: Path) -> None:
    async with serving(slow_service(), tmp_path, max_concurrency="1", deadline="60ms") as h:
        answers = await asyncio.gather(h.ask({"x": 1}), h.ask({"x": 2}))
        assert h.runtime.door is not None
        assert (h.runtime.door.inside, h.runtime.door.waiting) == (0, 0)
    assert [a.context.fallback_categories for a in answers] == [[], ["overloaded"]]


async def test_overload_is_a_503_with_retry_after_when_asked_or_without_fallback(
        tmp_path: Path) -> None:
    for svc, settings in ((slow_service(fallback=False), {}),
                          (slow_service(), {"overload_response": "503"})):
        async with serving(svc, tmp_path, max_concurrency="1", deadline="60ms",
                           **settings) as h:
            answers = await asyncio.gather(h.ask({"x": 1}), h.ask({"x": 2}))
        refused = [a for a in answers if a.status == 503]
        assert len(refused) == 1
        assert refused[0].retry_after
        assert b'"category":"overloaded"' in refused[0].body


async def test_a_waiter_cancelled_as_it_gets_its_slot_passes_the_slot_on(
        tmp_path: Path) -> None:
    async with serving(slow_service(), tmp_path, max_concurrency="1", deadline="1s") as h:
        door = h.runtime.door
        assert door is not None
        first = asyncio.ensure_future(h.ask({"x": 0}))
        await asyncio.sleep(0)
        waiter = asyncio.ensure_future(h.ask({"x": 1}))
        third = asyncio.ensure_future(h.ask({"x": 2}))
        await asyncio.sleep(0.01)
        assert door.waiting == 2
        await first  # hands its slot to `waiter` ...
        waiter.cancel()  # ... which gives up before it runs
        answer = await third
        assert answer.context.fallbacks == []
        assert (door.inside, door.waiting) == (0, 0)


async def test_off_admits_everything(tmp_path: Path) -> None:
    async with serving(slow_service(), tmp_path, max_concurrency="off") as h:
        assert h.runtime.door is None
        answers = await asyncio.gather(*(h.ask({"x": i}) for i in range(50)))
    assert all(not a.context.fallbacks for a in answers)


async def test_the_default_target_is_half_the_deadline(tmp_path: Path) -> None:
    async with serving(slow_service(), tmp_path, deadline="300ms") as h:
        assert h.runtime.door is not None
        assert h.runtime.door.limit._target == pytest.approx(0.15)


def test_own_timeouts_make_a_window_unhealthy_even_when_fast(clock: FakeClock) -> None:
    limiter = limit(clock)
    for _ in range(3):
        clock.advance(0.1)
        for i in range(10):
            limiter.sample(TARGET / 4, 200, timed_out=i < 3)  # 30 % timed out
    assert limiter.limit < 200


def test_rare_timeouts_are_tolerated(clock: FakeClock) -> None:
    limiter = limit(clock, initial_limit=100)
    for _ in range(20):
        clock.advance(0.1)
        for i in range(200):
            limiter.sample(TARGET / 4, 100, timed_out=i == 0)  # 0.5 %
    assert limiter.limit >= 100


def test_it_does_not_spiral_below_half_the_concurrency_last_seen_healthy(
        clock: FakeClock) -> None:
    """Past capacity, shed requests congest the loop too: latency stays high however low the
    limit goes. The limit must not chase it down to its minimum."""
    limiter = limit(clock)
    windows(limiter, clock, latency=TARGET / 2, in_flight=40, count=5)  # healthy at 40
    for _ in range(60):  # then 6 s overloaded, whatever the limit
        windows(limiter, clock, latency=5 * TARGET, in_flight=limiter.limit)
    assert 20 <= limiter.limit < 40


def test_the_floor_is_forgotten_once_nothing_is_healthy_for_a_while(clock: FakeClock) -> None:
    limiter = limit(clock, memory="2s")
    windows(limiter, clock, latency=TARGET / 2, in_flight=40, count=5)
    for _ in range(100):  # 10 s of overload: the memory of 40 expired
        windows(limiter, clock, latency=5 * TARGET, in_flight=limiter.limit)
    assert limiter.limit < 20
