"""Steady, bounded load on the replicas, and every answer it got.

``concurrency`` workers share one schedule of ``rate`` requests a second for ``duration``
seconds (a worker that falls behind does not catch up in a burst: the rate stays steady, as
in tests/zones/load.py). Requests alternate between the replicas, as a round-robin balancer
sends them. A request whose connection is refused (the replica is down) is sent once more, to
the other replica, as a balancer's retry would; a request already sent is never repeated (it
may have been served, and a guardrail may have counted it): it is recorded as lost.

The orders are the demo's, varied so that caches answer some but not all: known users and
products, 1 to 5 sub-orders; a quarter repeat a recent order (response-cache hits), a tenth
come from :data:`HOT_USERS`, who spend their guardrail budget within seconds. Each request
carries its own ``X-Request-Id`` (``<run>-<n>``) so its one event can be found.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from buttress.demo.data import N_PRODUCTS, N_USERS
from tests.reliability.http1 import Connection, Lost, Refused

HOT_USERS = (1, 2, 3, 4, 5)
HOT_SHARE = 0.1
REPEAT_SHARE = 0.25
RECENT = 200
HEALTHY_FALLBACKS = frozenset({"guardrail_exceeded"})
"""A refusal by a spent budget is the service working, not degraded."""


@dataclass(frozen=True)
class Answer:
    n: int
    sent: float  # seconds since the load started
    done: float
    replica: int  # the replica that answered (or was last tried)
    status: int  # 0: no HTTP answer at all
    request_id: str
    user: int
    order_id: str
    fallbacks: tuple[str, ...] = ()
    cache: str = ""
    model_version: str = ""
    discounted: bool = False
    retried: bool = False

    @property
    def latency_ms(self) -> float:
        return 1000 * (self.done - self.sent)

    @property
    def served(self) -> bool:
        return 200 <= self.status < 300

    @property
    def healthy(self) -> bool:
        """Served with no fallback but a guardrail's refusal: the whole pipeline ran."""
        return self.served and HEALTHY_FALLBACKS.issuperset(self.fallbacks)

    @property
    def admitted(self) -> bool:
        """A discount handed out: what the per-user guardrail counts."""
        return self.served and self.discounted


class Orders:
    """The ``n``-th order of a run: fresh mostly, sometimes a recent one again."""

    def __init__(self, run: str, seed: int) -> None:
        self.run = run
        self.rng = random.Random(seed)
        self.recent: list[dict[str, Any]] = []

    def next(self, n: int) -> dict[str, Any]:
        rng = self.rng
        if self.recent and rng.random() < REPEAT_SHARE:
            return rng.choice(self.recent)
        user = (rng.choice(HOT_USERS) if rng.random() < HOT_SHARE
                else rng.randint(len(HOT_USERS) + 1, N_USERS))
        order = {
            "order_id": f"{self.run}-o{n}",
            "user": {"id": user, "app_version": rng.choice(("4.2.0", "5.12.0", "6.0.1"))},
            "sub_orders": [{"sub_order_id": f"so-{j}",
                            "product_id": rng.randint(1, N_PRODUCTS),
                            "price": round(rng.uniform(50, 2000), 2),
                            "margin": round(rng.uniform(0.05, 0.4), 3),
                            "quantity": rng.randint(1, 2)}
                           for j in range(rng.randint(1, 5))],
        }
        self.recent = [*self.recent[-(RECENT - 1):], order]
        return order


@dataclass
class Load:
    urls: Sequence[str]
    run: str
    rate: float = 150.0
    duration: float = 10.0
    concurrency: int = 16
    seed: int = 7
    answers: list[Answer] = field(default_factory=list)
    started: float = 0.0
    until: float = float("inf")

    def now(self) -> float:
        return time.monotonic() - self.started

    def finish_in(self, seconds: float) -> None:
        """End the load ``seconds`` from now (``duration`` stays the longest it runs)."""
        self.until = self.now() + seconds

    async def run_with(self, fault: Callable[[Load], Awaitable[None]]) -> list[Answer]:
        """Run the load and ``fault(self)`` together; the answers once both are done."""
        self.started = time.monotonic()
        await asyncio.gather(self._run(), fault(self))
        self.answers.sort(key=lambda a: a.n)
        return self.answers

    async def _run(self) -> None:
        orders = Orders(self.run, self.seed)
        sequence = itertools.count()
        await asyncio.gather(*(self._worker(sequence, orders) for _ in range(self.concurrency)))

    async def _worker(self, sequence: itertools.count[int], orders: Orders) -> None:
        """One keep-alive connection to each replica, one request at a time."""
        connections = [Connection(url.host, url.port) for url in map(_address, self.urls)]
        try:
            while True:
                n = next(sequence)
                slot = n / self.rate
                if slot >= min(self.duration, self.until):
                    return
                order = orders.next(n)
                await asyncio.sleep(max(0.0, slot - self.now()))
                self.answers.append(await self._send(connections, n, order))
        finally:
            for connection in connections:
                connection.close()

    async def _send(self, connections: list[Connection], n: int, order: dict[str, Any]
                    ) -> Answer:
        request_id = f"{self.run}-{n}"
        body = orjson.dumps(order)
        sent = self.now()
        common = {"n": n, "sent": sent, "request_id": request_id,
                  "user": order["user"]["id"], "order_id": order["order_id"]}
        replica, retried = n % len(connections), False
        while True:
            try:
                response = await connections[replica].post(
                    "/predict", body, {"x-request-id": request_id})
                break
            except Refused:  # nothing was sent, so another replica may answer it
                if retried:
                    return Answer(done=self.now(), replica=replica, status=0, retried=True,
                                  **common)
                replica, retried = (replica + 1) % len(connections), True
            except Lost:  # sent, and no answer: it may have been served; not repeated
                return Answer(done=self.now(), replica=replica, status=0, retried=retried,
                              **common)
        done = self.now()
        headers = response.headers
        discounted = response.status == 200 and any(
            d["discount_pct"] > 0 for d in orjson.loads(response.body)["discounts"])
        return Answer(done=done, replica=replica, status=response.status,
                      fallbacks=tuple(filter(None, headers.get("x-fallback", "").split(","))),
                      cache=headers.get("x-cache", ""),
                      model_version=headers.get("x-model-version", ""),
                      discounted=discounted, retried=retried, **common)


@dataclass(frozen=True)
class _Address:
    host: str
    port: int


def _address(url: str) -> _Address:
    parsed = urlsplit(url)
    return _Address(parsed.hostname or "127.0.0.1", parsed.port or 80)
