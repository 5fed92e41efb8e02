"""Replicas hammering one Redis never overshoot a guardrail, and never refuse needlessly.

Four processes (spawned, like replicas) each run 50 concurrent tasks sending batches of random
size through six evaluators for ~1.6 s, across several 400 ms window edges. Each evaluator pairs
the guardrail under test with a *recorder*: a sliding window with a huge limit and a 10 min
window over the same measure. It never refuses, so (all-or-nothing) it admits exactly what the
guardrail under test admits, and its log in Redis holds the server timestamp and the admitted
cost of every batch — the exact record this test checks, in the store's own units.

The bounds checked, exactly (integer millionths, 0 tolerance):
- fixed window: each epoch-aligned window holds at most ``limit``;
- sliding window: every interval of length ``window`` holds at most ``limit``;
- no needless refusal: a refusal known (from the client's clock bracket around its call; Redis
  runs on this machine, so both read the same clock) to fall in a fixed window found that
  window filled past ``limit - cost``; for a sliding window, the entries within one window
  before the refusal add up past ``limit - cost``.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import multiprocessing
import random
import time
from collections import defaultdict
from typing import Any

import pytest
import redis

from buttress.backends import Connections
from buttress.guardrails import FixedWindow, Guardrail, Guardrails, SlidingWindow
from buttress.guardrails.policy import MAX_LIMIT, to_units
from tests.support import unique_prefix

pytestmark = [pytest.mark.slow, pytest.mark.redis]

PROCESSES = 4
TASKS = 50
LOAD_SECONDS = 1.6
MAX_COST = 200 * 3 * 15 / 100  # price x quantity x discount %: the largest one request can cost


def discount_value(request: dict[str, float], prediction: float) -> float:
    return request["price"] * request["quantity"] * prediction / 100


def recorded(request: dict[str, float], prediction: float) -> float:
    return discount_value(request, prediction)


# name -> (guardrail under test, whether it sums values or counts requests)
SCENARIOS: dict[str, Guardrail] = {
    "fixed_count": FixedWindow("fixed_count", 200, "400ms"),
    "sliding_count": SlidingWindow("sliding_count", 200, "400ms"),
    "fixed_sum": FixedWindow("fixed_sum", 1500.0, "400ms", measure=discount_value),
    "sliding_sum": SlidingWindow("sliding_sum", 1500.0, "400ms", measure=discount_value),
    "fixed_count_long": FixedWindow("fixed_count_long", 1000, "10min"),
    "sliding_sum_long": SlidingWindow("sliding_sum_long", 5000.0, "10min", measure=discount_value),
}


def recorder(guard: Guardrail) -> SlidingWindow:
    measure = None if guard.measure is None else recorded
    return SlidingWindow(f"{guard.name}_rec", MAX_LIMIT, "10min", measure=measure)


def worker(url: str, namespace: str, start_at: float, seed: int) -> dict[str, Any]:
    return asyncio.run(_work(url, namespace, start_at, seed))


async def _work(url: str, namespace: str, start_at: float, seed: int) -> dict[str, Any]:
    connections = Connections()
    evaluators = {}
    for name, guard in SCENARIOS.items():
        evaluators[name] = Guardrails([guard, recorder(guard)], url, namespace)
        await evaluators[name].open(connections)
    admitted: dict[str, list[float]] = defaultdict(list)
    refused: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    rng = random.Random(seed)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    stop_at = start_at + LOAD_SECONDS

    async def task() -> None:
        while time.time() < stop_at:
            batch = [
                (
                    {"price": round(rng.uniform(1, 200), 2), "quantity": rng.randint(1, 3)},
                    rng.uniform(0, 15),
                )
                for _ in range(rng.choice((1, 1, 2, 5, 12, 30)))
            ]
            for name, evaluator in evaluators.items():
                before = time.time()
                decisions = await evaluator.admit_many(batch)
                after = time.time()
                counts = SCENARIOS[name].measure is None
                for (request, pct), decision in zip(batch, decisions, strict=True):
                    assert not decision.unavailable
                    cost = 1.0 if counts else discount_value(request, pct)
                    if decision.admitted:
                        admitted[name].append(cost)
                    else:
                        window = (math.floor(before * 1e6) - 2, math.ceil(after * 1e6) + 2)
                        refused[name].append((*window, to_units(cost)))

    await asyncio.gather(*(task() for _ in range(TASKS)))
    await connections.aclose()
    return {"admitted": dict(admitted), "refused": dict(refused)}


def log_of(client: redis.Redis, namespace: str, name: str) -> list[tuple[int, int]]:
    """The recorder's ``(server time us, admitted units)`` entries, oldest first."""
    key = f"buttress:{{{namespace}}}:guardrail:{name}_rec:log"
    return [
        (int(stamp), int(member.split(b":")[1]))
        for member, stamp in client.zrange(key, 0, -1, withscores=True)
    ]


class Log:
    """The recorder's entries with prefix sums: units admitted in any (start, end] by bisection."""

    def __init__(self, entries: list[tuple[int, int]]) -> None:
        self.entries = entries
        self.stamps = [at for at, _ in entries]
        self.prefix = [0]
        for _, units in entries:
            self.prefix.append(self.prefix[-1] + units)

    def used(self, start: int, end: int) -> int:
        high = bisect.bisect_right(self.stamps, end)
        return self.prefix[high] - self.prefix[bisect.bisect_right(self.stamps, start)]

    def busiest(self, window: int) -> int:
        """The most admitted within any interval of length ``window``."""
        return max(self.used(at - window, at) for at in self.stamps)


def check_fixed(guard: Guardrail, log: Log, refusals: list[Any]) -> int:
    window, limit = guard.window_us, guard.limit_units
    fill: dict[int, int] = defaultdict(int)
    for at, units in log.entries:
        fill[at // window] += units
    assert max(fill.values()) <= limit, f"{guard.name} overshot: {dict(fill)}"
    assert log.busiest(window) <= 2 * limit  # the documented bound across an edge
    checked = 0
    for before, after, cost in refusals:
        if before // window == after // window:
            assert fill[before // window] > limit - cost, f"{guard.name}: needless refusal"
            checked += 1
    return checked


def check_sliding(guard: Guardrail, log: Log, refusals: list[Any]) -> int:
    window, limit = guard.window_us, guard.limit_units
    worst = log.busiest(window)
    assert worst <= limit, f"{guard.name} overshot: {worst} > {limit} in one window"
    for before, after, cost in refusals:
        assert log.used(before - window, after) > limit - cost, f"{guard.name}: needless refusal"
    return len(refusals)


def test_replicas_never_overshoot_and_never_refuse_needlessly(machine_redis_url: str) -> None:
    namespace = unique_prefix("guardrails-race")
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 4.0  # spawned interpreters need a moment to import everything
    try:
        with context.Pool(PROCESSES) as pool:
            # Generous timeouts: on a shared 2-core machine 200 connections opened at once and
            # queued calls can take a while, and a call that timed out on the client may
            # still have been admitted by Redis, which would blur what this test checks.
            url = machine_redis_url + "?timeout=5s&connect_timeout=5s"
            jobs = [(url, namespace, start_at, seed) for seed in range(PROCESSES)]
            results = pool.starmap(worker, jobs)
        client = redis.Redis.from_url(machine_redis_url)
        for name, guard in SCENARIOS.items():
            log = Log(log_of(client, namespace, name))
            costs = [c for r in results for c in r["admitted"].get(name, [])]
            refusals = [x for r in results for x in r["refused"].get(name, [])]
            assert refusals, f"{name}: the load never reached the limit, nothing was tested"
            # the recorder saw exactly what the decisions said was admitted
            assert log.prefix[-1] == sum(to_units(c) for c in costs)
            if isinstance(guard, FixedWindow):
                checked = check_fixed(guard, log, refusals)
            else:
                checked = check_sliding(guard, log, refusals)
            assert checked > len(refusals) / 2, f"{name}: too few refusals could be placed"
            if guard.window_seconds < LOAD_SECONDS:  # several window edges were crossed
                assert log.stamps[-1] // guard.window_us - log.stamps[0] // guard.window_us >= 2
            elif log.stamps[0] // guard.window_us == log.stamps[-1] // guard.window_us:
                # all in one window: the total itself is bounded, from both sides
                total = math.fsum(costs)
                slack = len(costs) * 0.5e-6  # each cost was rounded to millionths
                assert guard.limit - MAX_COST <= total <= guard.limit + slack, name
                if guard.measure is None:
                    assert len(costs) == guard.limit, name
    finally:
        cleanup = redis.Redis.from_url(machine_redis_url)
        keys = list(cleanup.scan_iter(match=f"buttress:{{{namespace}}}:*"))
        if keys:
            cleanup.delete(*keys)
