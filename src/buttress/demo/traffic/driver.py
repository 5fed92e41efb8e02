"""Sending the demo traffic: open loop, to a running server, with the outcomes tallied.

Open loop: requests leave at the target rate (Poisson arrivals) whether or not earlier ones have
come back, as real users do. A closed loop slows down exactly when the server does and so hides
the latency it causes (coordinated omission). A request due while ``concurrency`` are in flight
is counted as skipped rather than queued, so the schedule never drifts. What is sent comes from
:mod:`buttress.demo.traffic.mix`; outcomes are tallied in :mod:`buttress.demo.traffic.stats`.

Why not locust, k6 or vegeta: they are separate tools with their own processes and reports; this
traffic must speak the demo's contract and fault conventions and feed a display in this process.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import httpx

from buttress.demo.traffic.mix import Episodes, Mix, PlannedRequest, TrafficGenerator, demo_orders
from buttress.demo.traffic.stats import Outcome, TrafficReport, TrafficStats


class TrafficError(RuntimeError):
    """The traffic could not start (bad settings, or the service never became ready)."""


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
