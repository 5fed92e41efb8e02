"""Replicas for tests/reliability/test_replicas.py: a ``buttress serve`` whose wall clock is
skewed, bursts of claims fired at a chosen instant of the Redis server's clock, and what the
guardrail recorder's log says was admitted in each window."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis.asyncio

from tests.servers import RunningServer, clean_environment, wait_ready
from tests.support import free_port

SKEWED_CLOCK = Path(__file__).resolve().parent / "skewed_clock.py"


@contextmanager
def skewed_server(target: str, workdir: Path, offset: float,
                  env: Mapping[str, str]) -> Iterator[RunningServer]:
    """``buttress serve target`` in a process whose wall clock is ``offset`` seconds off
    (``skewed_clock.py``); stopped at the end, like ``tests.servers.running_server``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(SKEWED_CLOCK), "--offset", str(offset), "--",
         "serve", target, "--port", str(port)],
        cwd=workdir, env=clean_environment(workdir, env), stdout=log, stderr=subprocess.STDOUT)
    log.close()
    server = RunningServer(process, port, workdir)
    try:
        wait_ready(server, 60)
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class Claim:
    """One claim of a burst: which replica, its request id, the real wall-clock bracket around
    the HTTP call (seconds; Redis runs on this machine, so its ``TIME`` reads the same clock,
    as tests/test_guardrails_concurrency.py also relies on), and whether it was admitted."""

    replica: int
    request_id: str
    before: float
    after: float
    admitted: bool


class Burst:
    """Fires claims at both replicas at once, at an instant given on the Redis clock."""

    def __init__(self, servers: list[RunningServer], client: redis.asyncio.Redis) -> None:
        self.servers = servers
        self.redis = client
        self.http = [httpx.AsyncClient(base_url=s.base_url, timeout=10,
                                       limits=httpx.Limits(max_connections=64))
                     for s in servers]
        self.claims: list[Claim] = []
        self._numbers = itertools.count()
        self.lag = 0.0
        """Redis clock minus this process's clock (0 give or take a round trip): only to
        schedule bursts; brackets are this machine's clock, which Redis reads too."""

    async def __aenter__(self) -> Burst:
        seconds, micros = await self.redis.time()
        self.lag = seconds + micros / 1e6 - time.time()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for http in self.http:
            await http.aclose()

    async def redis_now(self) -> float:
        seconds, micros = await self.redis.time()
        return float(seconds + micros / 1e6)

    async def warm(self, per_replica: int) -> None:
        """Open the connections a burst needs, so the burst does not pay for them."""
        await asyncio.gather(*(http.get("/healthz") for http in self.http
                               for _ in range(per_replica)))

    async def claim(self, replica: int, user: str) -> Claim:
        request_id = f"{user}-{replica}-{next(self._numbers)}"
        before = time.time()
        response = await self.http[replica].post("/predict", json={"user": user, "value": 1.0},
                                                 headers={"X-Request-Id": request_id})
        after = time.time()
        assert response.status_code == 200, response.text
        fallback = response.headers.get("x-fallback")
        admitted = response.json()["granted"] == 1.0
        assert admitted == (fallback is None), (response.json(), fallback)
        if not admitted:
            assert fallback == "guardrail_exceeded", fallback
        return Claim(replica, request_id, before, after, admitted)

    async def at(self, redis_time: float, user: str, per_replica: int) -> list[Claim]:
        """``per_replica`` claims to each replica, all started at ``redis_time``."""
        await asyncio.sleep(max(0.0, redis_time - self.lag - time.time()))
        claims = await asyncio.gather(*(self.claim(replica, user)
                                        for replica in range(len(self.servers))
                                        for _ in range(per_replica)))
        self.claims += claims
        return list(claims)


async def recorded(client: redis.asyncio.Redis, namespace: str, recorder: str,
                   key: str) -> list[tuple[int, int]]:
    """The recorder's ``(Redis time in µs, units admitted)`` entries for ``key``, oldest
    first (one entry per key per admitted batch, stamped by the Lua script)."""
    log = f"buttress:{{{namespace}}}:guardrail:{recorder}:log"
    entries = []
    for member, stamp in await client.zrange(log, 0, -1, withscores=True):
        _, units, entry_key = member.decode().split(":", 2)
        if entry_key == key:
            entries.append((int(stamp), int(units)))
    return sorted(entries)


def per_window(entries: list[tuple[int, int]], window_us: int) -> dict[int, int]:
    """Units admitted in each epoch-aligned window (its index: Redis time // window)."""
    fill: dict[int, int] = defaultdict(int)
    for stamp, units in entries:
        fill[stamp // window_us] += units
    return dict(fill)
