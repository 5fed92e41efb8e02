"""Synthetic traffic for the discount demo: realistic requests, sent open-loop, outcomes counted.

The mix, one draw per request (weights in :class:`Mix`); the server's answer after the arrow:

- ``valid``: an order from ``examples.discount.data.generate_orders`` -> 200 (that pool already
  has ~3% unknown users and ~2% unknown products, so some carry ``features_missing``)
- ``renamed_key``: ``seller_margin`` instead of ``margin`` -> 200, absorbed by an alias
- ``wrong_type``: ``"quantity": "two"``, ``"margin": "high"`` or a numeric ``app_version``
  -> 200 with the field's default, ``input_contract``
- ``unknown_key``: keys the contract does not know (``coupon_code``, ...) -> 200, drift
- ``unknown_ids``: a user id above 5000 and/or a product id above 2000 -> 200, ``features_missing``
- ``missing_field``: a required field removed -> 422
- ``malformed_json``: a truncated body -> 400

Episodes, by time since the start (:class:`Episodes`): a burst (every 20 s, 3 s at 5x the rate);
a model outage (every 45 s from 25 s on, 2 s in which every order id starts with ``fail-model``:
``model_error`` until the model's breaker opens, then ``model_unavailable`` until it closes); and
1% of requests with ``X-Deadline-Ms: 1`` (``model_timeout``).

Open loop: requests leave at the target rate (Poisson arrivals) whether or not earlier ones have
come back, as real users do. A closed loop slows down exactly when the server does and so hides
the latency it causes (coordinated omission). A request due while ``concurrency`` are in flight
is counted as skipped rather than queued, so the schedule never drifts.

Why not locust, k6 or vegeta: they are separate tools with their own processes and reports; this
traffic must speak the demo's contract and fault conventions and feed a display in this process.
Outcomes are tallied in :mod:`buttress.traffic_stats`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import httpx
import orjson

from buttress.traffic_stats import Outcome, TrafficReport, TrafficStats

UNKNOWN_USER_IDS = (5001, 9999)  # the demo knows users 1..5000
UNKNOWN_PRODUCT_IDS = (2001, 2999)  # and products 1..2000
DEMO_ORDER_POOL = 2000


class TrafficError(RuntimeError):
    """The traffic could not start (bad settings, or the service never became ready)."""


class Kind(StrEnum):
    VALID = "valid"
    RENAMED_KEY = "renamed_key"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_KEY = "unknown_key"
    UNKNOWN_IDS = "unknown_ids"
    MISSING_FIELD = "missing_field"
    MALFORMED_JSON = "malformed_json"


@dataclass(frozen=True)
class Mix:
    """Relative weight of each request kind (they need not sum to 1)."""

    valid: float = 0.80
    renamed_key: float = 0.04
    wrong_type: float = 0.04
    unknown_key: float = 0.04
    unknown_ids: float = 0.04
    missing_field: float = 0.02
    malformed_json: float = 0.02

    def __post_init__(self) -> None:
        weights = [getattr(self, f.name) for f in fields(self)]
        if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError("Mix weights must be finite, non-negative, and not all zero")

    def kinds(self) -> tuple[tuple[Kind, ...], tuple[float, ...]]:
        """The kinds and their cumulative weights, for ``random.choices``."""
        kinds = tuple(Kind(f.name) for f in fields(self))
        total, cumulative = 0.0, []
        for kind in kinds:
            total += getattr(self, kind.value)
            cumulative.append(total)
        return kinds, tuple(cumulative)


@dataclass(frozen=True)
class Episodes:
    """Time-driven events: bursts, model outages, tight deadlines. ``*_for=0`` turns one off."""

    burst_start: float = 10.0
    burst_every: float = 20.0
    burst_for: float = 3.0
    burst_factor: float = 5.0
    outage_start: float = 25.0
    outage_every: float = 45.0
    outage_for: float = 2.0
    tight_deadline_share: float = 0.01
    tight_deadline_ms: int = 1

    def __post_init__(self) -> None:
        for name in ("burst", "outage"):
            start, every, length = (getattr(self, f"{name}_{p}") for p in ("start", "every", "for"))
            if not (start >= 0 and every > 0 and 0 <= length <= every):  # NaN fails too
                raise ValueError(f"Episodes: need {name}_start >= 0, {name}_every > 0 and "
                                 f"0 <= {name}_for <= {name}_every")
        if not self.burst_factor >= 1:
            raise ValueError("Episodes.burst_factor must be at least 1")
        if not 0 <= self.tight_deadline_share <= 1 or self.tight_deadline_ms < 1:
            raise ValueError("Episodes: tight_deadline_share in [0, 1], tight_deadline_ms >= 1")

    def in_burst(self, elapsed: float) -> bool:
        return _in_window(elapsed, self.burst_start, self.burst_every, self.burst_for)

    def in_outage(self, elapsed: float) -> bool:
        return _in_window(elapsed, self.outage_start, self.outage_every, self.outage_for)

    def rate_factor(self, elapsed: float) -> float:
        return self.burst_factor if self.in_burst(elapsed) else 1.0


def _in_window(elapsed: float, start: float, every: float, length: float) -> bool:
    return length > 0 and elapsed >= start and (elapsed - start) % every < length


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    kind: Kind
    body: bytes
    headers: Mapping[str, str]
    model_failure: bool
    tight_deadline: bool


class TrafficGenerator:
    """Turns a pool of valid orders into the mix; a pure function of the seed and the times."""

    def __init__(self, orders: Sequence[Mapping[str, Any]], *, seed: int, mix: Mix | None = None,
                 episodes: Episodes | None = None) -> None:
        if not orders:
            raise ValueError("TrafficGenerator needs at least one valid order")
        # Serialized once: a copy per request is then one orjson.loads, not a deepcopy.
        self._pool = [orjson.dumps(order) for order in orders]
        self._rng = random.Random(seed)
        self._kinds, self._cumulative = (mix or Mix()).kinds()
        self.episodes = episodes or Episodes()
        self._serial = 0

    def next(self, elapsed: float) -> PlannedRequest:
        """The request to send ``elapsed`` seconds into the run."""
        rng, episodes = self._rng, self.episodes
        self._serial += 1
        kind = rng.choices(self._kinds, cum_weights=self._cumulative)[0]
        order: dict[str, Any] = orjson.loads(rng.choice(self._pool))
        outage = episodes.in_outage(elapsed)
        if outage:
            order["order_id"] = f"fail-model-{self._serial}"
        body = _SHAPES[kind](order, rng)
        tight = rng.random() < episodes.tight_deadline_share
        headers = {"x-deadline-ms": str(episodes.tight_deadline_ms)} if tight else {}
        return PlannedRequest(kind, body, headers, outage, tight)


def _valid(order: dict[str, Any], rng: random.Random) -> bytes:
    return orjson.dumps(order)


def _renamed_key(order: dict[str, Any], rng: random.Random) -> bytes:
    for sub in order["sub_orders"]:
        if "margin" in sub:
            sub["seller_margin"] = sub.pop("margin")
    return orjson.dumps(order)


def _wrong_type(order: dict[str, Any], rng: random.Random) -> bytes:
    sub = rng.choice(order["sub_orders"])
    target, value = rng.choice(((sub, ("quantity", "two")), (sub, ("margin", "high")),
                                (order["user"], ("app_version", 5.12))))
    target[value[0]] = value[1]
    return orjson.dumps(order)


def _unknown_key(order: dict[str, Any], rng: random.Random) -> bytes:
    target, key, value = rng.choice(((order, "coupon_code", "SPRING10"),
                                     (order["user"], "device", "android"),
                                     (rng.choice(order["sub_orders"]), "gift_wrap", True)))
    target[key] = value
    return orjson.dumps(order)


def _unknown_ids(order: dict[str, Any], rng: random.Random) -> bytes:
    which = rng.choice(("user", "product", "both"))
    if which != "product":
        order["user"]["id"] = rng.randint(*UNKNOWN_USER_IDS)
    if which != "user":
        rng.choice(order["sub_orders"])["product_id"] = rng.randint(*UNKNOWN_PRODUCT_IDS)
    return orjson.dumps(order)


def _missing_field(order: dict[str, Any], rng: random.Random) -> bytes:
    sub = rng.choice(order["sub_orders"])
    target, key = rng.choice(((order, "order_id"), (order, "user"), (order, "sub_orders"),
                              (order["user"], "id"), (sub, "price"), (sub, "product_id")))
    del target[key]
    return orjson.dumps(order)


def _malformed_json(order: dict[str, Any], rng: random.Random) -> bytes:
    body = orjson.dumps(order)
    return body[: rng.randint(1, len(body) - 1)]  # no proper prefix of an object is valid JSON


_SHAPES: dict[Kind, Callable[[dict[str, Any], random.Random], bytes]] = {
    Kind.VALID: _valid, Kind.RENAMED_KEY: _renamed_key, Kind.WRONG_TYPE: _wrong_type,
    Kind.UNKNOWN_KEY: _unknown_key, Kind.UNKNOWN_IDS: _unknown_ids,
    Kind.MISSING_FIELD: _missing_field, Kind.MALFORMED_JSON: _malformed_json,
}


def demo_orders(seed: int, n: int = DEMO_ORDER_POOL) -> list[dict[str, Any]]:
    """Valid demo orders from ``examples.discount.data.generate_orders``.

    ``examples`` is not part of the installed package: it imports when the repository root is
    on ``sys.path``; otherwise its ``data.py`` (which imports only numpy) is loaded by path from
    the working directory or the source checkout, without touching ``sys.path``.
    """
    try:
        from examples.discount import data
    except ImportError:
        data = _load_demo_data()
    orders: list[dict[str, Any]] = data.generate_orders(n, seed=seed)
    return orders


def _load_demo_data() -> ModuleType:
    relative = Path("examples", "discount", "data.py")
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        spec = importlib.util.spec_from_file_location("_buttress_demo_data", root / relative)
        if spec is not None and spec.loader is not None and (root / relative).is_file():
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise TrafficError("cannot find examples/discount/data.py: run from the buttress repository "
                       "or pass orders=")


class Reporter(Protocol):
    """Something shown every ``interval`` seconds while the traffic runs (a display, a log)."""

    interval: float

    def update(self, report: TrafficReport) -> None: ...


async def wait_until_ready(client: httpx.AsyncClient, base_url: str, within: float,
                           stop: asyncio.Event | None = None) -> None:
    """Poll ``/readyz`` until it answers 200 (the server may still be loading its model)."""
    deadline = time.monotonic() + within
    while stop is None or not stop.is_set():
        try:
            if (await client.get(f"{base_url}/readyz")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() >= deadline:
            raise TrafficError(f"{base_url} was not ready within {within:g}s")
        await asyncio.sleep(0.1)


async def drive(
    base_url: str, *, duration: float | None = None, rate: float = 100.0, concurrency: int = 64,
    seed: int = 0, mix: Mix | None = None, episodes: Episodes | None = None,
    orders: Sequence[Mapping[str, Any]] | None = None, stop: asyncio.Event | None = None,
    reporter: Reporter | None = None, ready_timeout: float = 30.0, request_timeout: float = 5.0,
) -> TrafficReport:
    """Send the mix to ``base_url`` until ``duration`` passes or ``stop`` is set; tally outcomes."""
    if not rate > 0 or concurrency < 1 or (duration is not None and not duration > 0):
        raise TrafficError("need rate > 0, concurrency >= 1 and duration > 0 (or None)")
    base_url = base_url.rstrip("/")
    generator = TrafficGenerator(demo_orders(seed) if orders is None else orders, seed=seed,
                                 mix=mix, episodes=episodes)
    stop = stop or asyncio.Event()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=request_timeout,
                                 headers={"content-type": "application/json"}) as client:
        await wait_until_ready(client, base_url, ready_timeout, stop)
        run = _Run(client, f"{base_url}/predict", generator, TrafficStats(base_url), concurrency)
        show = asyncio.create_task(_report_every(reporter, run)) if reporter else None
        try:
            await run.send_until(stop, duration, rate, seed)
        finally:
            if show:
                show.cancel()
            await run.drain(request_timeout)
        report = run.report()
        if reporter:
            reporter.update(report)
        return report


class _Run:
    """One traffic run: the schedule, the in-flight requests and their tally."""

    def __init__(self, client: httpx.AsyncClient, url: str, generator: TrafficGenerator,
                 stats: TrafficStats, concurrency: int) -> None:
        self.client, self.url, self.generator = client, url, generator
        self.stats, self.concurrency = stats, concurrency
        self.start = time.monotonic()
        self.in_flight: set[asyncio.Task[None]] = set()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def report(self) -> TrafficReport:
        elapsed = self.elapsed()
        episodes = self.generator.episodes
        return self.stats.report(elapsed, in_flight=len(self.in_flight),
                                 burst=episodes.in_burst(elapsed),
                                 outage=episodes.in_outage(elapsed))

    async def send_until(self, stop: asyncio.Event, duration: float | None, rate: float,
                         seed: int) -> None:
        arrivals = random.Random(seed + 1)  # its own stream: timing never changes the mix
        self.stats.target_rate = rate
        next_at = 0.0
        while not stop.is_set():
            now = self.elapsed()
            if duration is not None and now >= duration:
                return
            if next_at < now - 1.0:
                next_at = now  # the loop stalled for a second: resume, don't fire a backlog
            while next_at <= now:
                self._fire(next_at)
                current = rate * self.generator.episodes.rate_factor(next_at)
                self.stats.target_rate = current
                next_at += arrivals.expovariate(current)
            await asyncio.sleep(min(next_at - self.elapsed(), 0.1))

    def _fire(self, at: float) -> None:
        planned = self.generator.next(at)
        if len(self.in_flight) >= self.concurrency:
            self.stats.skipped += 1
            return
        task = asyncio.create_task(self._send(planned))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def _send(self, planned: PlannedRequest) -> None:
        self.stats.record_sent(planned.kind)
        began = time.perf_counter()
        try:
            response = await self.client.post(self.url, content=planned.body,
                                              headers=planned.headers)
        except (httpx.HTTPError, OSError) as error:  # counted, never raised: the run goes on
            outcome = Outcome(None, time.perf_counter() - began, error=type(error).__name__)
        else:
            headers = response.headers
            outcome = Outcome(
                response.status_code, time.perf_counter() - began,
                fallbacks=tuple(c for c in headers.get("x-fallback", "").split(",") if c),
                cache=headers.get("x-cache", ""), model_version=headers.get("x-model-version", ""))
        self.stats.record(outcome, self.elapsed())

    async def drain(self, grace: float) -> None:
        """Let requests in flight finish for up to ``grace`` seconds, then cancel the rest."""
        if self.in_flight:
            _, late = await asyncio.wait(set(self.in_flight), timeout=grace)
            for task in late:
                task.cancel()


async def _report_every(reporter: Reporter, run: _Run) -> None:
    while True:
        await asyncio.sleep(reporter.interval)
        reporter.update(run.report())
