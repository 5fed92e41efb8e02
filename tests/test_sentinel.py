"""``redis+sentinel://`` URLs: parsing, one client per URL, and what a failover costs.

The component contract tests run over a sentinel URL too (the ``sentinel`` entry of the backend
matrices); here is what only Sentinel has: the primary dies and a replica takes over.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from buttress.backends import Connections, parse_backend_url
from buttress.backends.sentinel import majority_answer
from buttress.cache import MISS, Cache, ResultCache
from buttress.config import Settings
from buttress.resilience.breaker import Breaker
from buttress.resilience.categories import Category
from tests.support import PrivateSentinel, unique_prefix
from tests.test_cache_contract import RecordingObserver


def test_a_sentinel_url_names_sentinels_service_and_database() -> None:
    url = parse_backend_url(
        "redis+sentinel://sentinel-a:26380,sentinel-b,[::1]:26381/mymaster/2?timeout=50ms")

    assert url.sentinels == (("sentinel-a", 26380), ("sentinel-b", 26379), ("::1", 26381))
    assert (url.path, url.db, url.options) == ("mymaster", 2, {"timeout": "50ms"})
    assert url.is_redis
    assert url.is_sentinel
    assert not parse_backend_url("redis://127.0.0.1:6379/0").is_sentinel
    assert parse_backend_url("redis+sentinel://s1/mymaster").db == 0


@pytest.mark.parametrize(("raw", "message"), [
    ("redis+sentinel:///mymaster/0", "names no sentinel"),
    ("redis+sentinel://s1:26379/", "names no master"),
    ("redis+sentinel://s1:26379/mymaster/zero", "database number"),
    ("redis+sentinel://s1:port/mymaster/0", r"is not host\[:port\]"),
    ("redis+sentinel://:secret@s1/mymaster/0", "credentials"),
])
def test_a_bad_sentinel_url_says_what_is_wrong(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_backend_url(raw)


def test_settings_accept_a_sentinel_url_anywhere_a_redis_url_goes() -> None:
    url = "redis+sentinel://s1:26379,s2:26379/mymaster/0"
    settings = Settings(backend=url)

    assert (settings.feature_store_url, settings.cache_store_url,
            settings.guardrail_store_url) == (url, url, url)


async def test_one_client_per_sentinel_url_and_master() -> None:
    connections = Connections()
    try:
        one = connections.redis("redis+sentinel://s1:26379,s2:26379/a/0")
        assert connections.redis("redis+sentinel://s1:26379,s2:26379/a/0") is one
        assert connections.redis("redis+sentinel://s1:26379,s2:26379/b/0") is not one
    finally:
        await connections.aclose()  # never connected: closing must not need the servers


@pytest.mark.slow
@pytest.mark.redis
async def test_a_failover_costs_what_redis_being_away_costs(tmp_path: Path) -> None:
    """The primary dies: each call answers a miss within its timeouts (never raises) and the
    breaker opens, as for a dead ``redis://``; once Sentinel has promoted the replica, the
    same cache object reads what was written before, from the new primary."""
    sentinel = PrivateSentinel(tmp_path, with_replica=True, down_after_ms=300)
    sentinel.start()
    connections = Connections()
    observer = RecordingObserver()
    try:
        url = f"{sentinel.url}?timeout=100ms&connect_timeout=100ms"
        cache = ResultCache(
            Cache(url=url, breaker=Breaker(consecutive_failures=2, open_for="200ms")),
            namespace=unique_prefix("failover"), scope="response", observer=observer)
        await cache.open(connections)
        assert await cache.set("k", "written before the failover")
        # the write is on the replica before the primary dies (WAIT: acknowledged by 1)
        primary = connections.redis(sentinel.primary.url + "?timeout=5s")
        assert await primary.execute_command("WAIT", 1, 3000) == 1

        sentinel.primary.stop()
        answers, states, slowest = [], set(), 0.0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            started = time.monotonic()
            answer = await cache.get("k")
            slowest = max(slowest, time.monotonic() - started)
            answers.append(answer)
            states.add(cache.breaker_state)
            if answer != MISS:
                break
            await asyncio.sleep(0.02)

        assert answers[-1] == "written before the failover"
        assert MISS in answers  # the outage was seen, and answered as a miss
        assert "open" in states  # ... and the breaker took the calls off Redis
        assert {category for category, _ in observer.errors} == {Category.CACHE_UNAVAILABLE}
        # one call: a sentinel asked (100 ms at most) + a connect (100 ms) + a command (100 ms)
        assert slowest < 0.6, slowest
        assert sentinel.replica is not None
        replica = connections.redis(sentinel.replica.url)
        assert (await replica.info("replication"))["role"] == "master"
        assert await cache.set("k", "written after the failover")
    finally:
        await connections.aclose()
        sentinel.stop()


@pytest.mark.slow
@pytest.mark.redis
async def test_a_silent_sentinel_costs_nothing_while_a_majority_answers(
    tmp_path: Path,
) -> None:
    """Of three sentinels, the first listed accepts connections and never answers (a zone
    gone quiet): the two others are a majority, so callers whose deadline (30 ms) is shorter
    than its timeout (100 ms) still reach the primary."""
    sentinel = PrivateSentinel(tmp_path, count=2)
    sentinel.start()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes handshakes; nobody ever reads or answers
    connections = Connections()
    try:
        silent_port = silent.getsockname()[1]
        answering = ",".join(f"127.0.0.1:{port}" for port in sentinel.ports)
        url = (f"redis+sentinel://127.0.0.1:{silent_port},{answering}/"
               f"{sentinel.service}/0?timeout=100ms&connect_timeout=100ms")
        client = connections.redis(url)
        outcomes = []
        for _ in range(20):
            try:
                outcomes.append(await asyncio.wait_for(client.ping(), timeout=0.03))
            except TimeoutError:
                outcomes.append(False)
            await asyncio.sleep(0.03)
        assert outcomes == [True] * len(outcomes)
    finally:
        await connections.aclose()
        silent.close()
        sentinel.stop()


class FakeSentinel:
    """Answers ``SENTINEL MASTERS`` after ``delay`` with one master's state, or never."""

    def __init__(self, ip: str | None, epoch: int = 0, delay: float = 0.0) -> None:
        self.ip, self.epoch, self.delay = ip, epoch, delay

    async def sentinel_masters(self) -> dict[str, dict[str, object]]:
        await asyncio.sleep(self.delay if self.ip else 3600)
        return {"mymaster": {"ip": self.ip, "port": 6379, "config-epoch": self.epoch}}


async def test_a_sentinel_that_missed_the_failover_is_outvoted() -> None:
    """The stale sentinel (its zone was cut off) answers first; a majority includes one that
    saw the failover, and the higher config epoch wins."""
    sentinels = [FakeSentinel("10.0.0.1", epoch=0), FakeSentinel("10.0.0.2", epoch=1, delay=0.01),
                 FakeSentinel(None)]

    address = await asyncio.wait_for(
        majority_answer(sentinels, "mymaster", valid=lambda state: True), timeout=1)

    assert address == ("10.0.0.2", 6379)


async def test_no_valid_answer_means_no_master() -> None:
    sentinels = [FakeSentinel("10.0.0.1"), FakeSentinel("10.0.0.2")]

    assert await majority_answer(sentinels, "mymaster", valid=lambda state: False) is None
