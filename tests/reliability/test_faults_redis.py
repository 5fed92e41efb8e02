"""Redis fails under steady load: killed and restarted, frozen (SIGSTOP, ``CLIENT PAUSE``),
slowed by a proxy. The feature store, both caches and the guardrail counters live on it.

What the design says happens (README, "Scaling out with Redis"): each call costs at most the
URL's timeout (50 ms) until the component's breaker opens, then nothing; the features fall
back to their defaults (``features_unavailable``), the caches to a miss
(``cache_unavailable``), the guardrail to its fail policy (closed here:
``guardrail_unavailable``, the default prediction). When Redis is back, each breaker's next
probe, ``open_for`` (5 s) after it opened, finds it, so answers are healthy again within
``open_for`` + :data:`PROBE_SLACK` of the fault's end.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.reliability.faults import (
    NOISE,
    WARM,
    Outcome,
    check,
    hold,
    under_load,
)
from tests.reliability.figures import SHED
from tests.reliability.proxy import DelayProxy
from tests.reliability.replicas import ADMIN_TOKEN, Replicas, persistent_redis

REDIS_DOWN = frozenset({"features_unavailable", "cache_unavailable", "guardrail_unavailable"})
FAULT = 3.0
AFTER = 8.0
OPEN_FOR = 5.0  # the breakers' default open_for
PROBE_SLACK = 1.0
RECOVERY = OPEN_FOR + PROBE_SLACK
DETECTION = 0.5
"""Seconds into the fault after which every answer should show it (the breakers open after
their first failures; requests already past Redis are served normally)."""
PROXY_DELAY = 0.3  # 10x the feature stages' 30 ms timeout, 6x the Redis timeout
ALSO_SEEN = frozenset({"guardrail_exceeded", SHED})


def check_redis_fault(outcome: Outcome, replicas: Replicas) -> None:
    """Every answer in the fault (past detection) carries the three categories of a Redis
    that does not answer, and no category the fault cannot cause."""
    report = outcome.report
    during = [a for a in outcome.during(DETECTION) if SHED not in a.fallbacks]
    showing = [a for a in during if REDIS_DOWN.issubset(a.fallbacks)]
    assert len(showing) >= (1 - NOISE) * len(during), report
    assert set(outcome.figures.during) <= REDIS_DOWN | ALSO_SEEN | {"model_timeout"}, report
    # the replicas counted what the clients saw (one guardrail gate per request)
    assert outcome.counted["guardrail_unavailable"] == outcome.with_category(
        "guardrail_unavailable"), report
    print(f"  {len(showing)} of {len(during)} answers from {DETECTION} s into the fault "
          f"carry all three; guardrail_unavailable counted "
          f"{outcome.counted['guardrail_unavailable']:.0f}, answered "
          f"{outcome.with_category('guardrail_unavailable')}")
    check(outcome, replicas, recovery_within=RECOVERY)
    # a request whose Redis calls ate its deadline may leave the model no time: rarely
    assert outcome.figures.during.get("model_timeout", 0) <= NOISE * len(during), report


def duration() -> float:
    return WARM + FAULT + AFTER


async def test_redis_killed_and_restarted(replicas: Replicas) -> None:
    admin: list[int] = []

    def ask_admin() -> None:
        admin[:] = admin_statuses(replicas.urls[0])  # the last run's, if it ran twice

    outcome = await under_load(
        replicas, "redis-killed",
        lambda load: hold(load, replicas.redis.stop, replicas.redis.start, FAULT,
                          meanwhile=ask_admin),
        duration=duration(), categories=REDIS_DOWN)
    # the admin routes that need Redis say it is unavailable (503), no 500
    print(f"  /admin/guardrails and a limit change during the outage: {admin}")
    assert admin == [503, 503], admin
    check_redis_fault(outcome, replicas)


def admin_statuses(url: str) -> list[int]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    return [httpx.get(f"{url}/admin/guardrails", headers=headers, timeout=5).status_code,
            httpx.post(f"{url}/admin/guardrails/discounted_orders_per_user_per_day",
                       json={"limit": 5}, headers=headers, timeout=5).status_code]


async def test_redis_frozen_with_sigstop(replicas: Replicas) -> None:
    process = replicas.redis.process
    assert process is not None
    try:
        outcome = await under_load(
            replicas, "redis-sigstop",
            lambda load: hold(load, lambda: process.send_signal(signal.SIGSTOP),
                              lambda: process.send_signal(signal.SIGCONT), FAULT),
            duration=duration(), categories=REDIS_DOWN)
    finally:
        process.send_signal(signal.SIGCONT)
    check_redis_fault(outcome, replicas)


async def test_redis_paused_with_client_pause(replicas: Replicas) -> None:
    client = redis.Redis(port=replicas.redis.port)

    def pause() -> None:
        client.execute_command("CLIENT", "PAUSE", int(FAULT * 1000), "ALL")

    outcome = await under_load(
        replicas, "redis-client-pause", lambda load: hold(load, pause, lambda: None, FAULT),
        duration=duration(), categories=REDIS_DOWN)
    check_redis_fault(outcome, replicas)


@pytest.fixture
def slow_redis(tmp_path: Path) -> Iterator[tuple[Replicas, DelayProxy]]:
    """Two replicas that reach their own Redis through the delaying proxy."""
    server = persistent_redis(tmp_path / "redis")
    server.start()
    proxy = DelayProxy(server.port)
    proxy.start()
    running = Replicas(tmp_path, server, proxy.url)
    try:
        running.start()
        yield running, proxy
    finally:
        running.stop()
        proxy.stop()
        server.stop()


async def test_redis_slowed_by_a_proxy(slow_redis: tuple[Replicas, DelayProxy]) -> None:
    replicas, proxy = slow_redis
    outcome = await under_load(
        replicas, "redis-slow",
        lambda load: hold(load, lambda: proxy.delay(PROXY_DELAY), lambda: proxy.delay(0.0),
                          FAULT),
        duration=duration(), categories=REDIS_DOWN)
    check_redis_fault(outcome, replicas)

