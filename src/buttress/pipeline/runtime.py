"""A built service: its settings, metrics, events, connections and pipeline, started and
stopped as one. ``Runtime.answer`` serves one request end to end, independent of transport:
it returns a status code and a body and records exactly one event and the request's metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from buttress.backends import Connections
from buttress.interface import ContractViolation, InputRejected
from buttress.observability.events import EventLog, EventSink, JsonlSink
from buttress.observability.metrics import (
    FLUSH_INTERVAL,
    ServiceMetrics,
    mark_worker_dead,
    multiprocess_enabled,
)
from buttress.pipeline.context import AppliedFallback, RequestContext
from buttress.pipeline.engine import Pipeline, StageFailed
from buttress.resilience.categories import Category
from buttress.resilience.durations import as_ms

if TYPE_CHECKING:
    from buttress.config import Settings
    from buttress.service import Service

log = logging.getLogger("buttress")

PREDICT_ROUTE = "/predict"


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes
    context: RequestContext


def error_body(
    category: str, message: str, violations: Sequence[ContractViolation] = ()
) -> bytes:
    """The JSON error format of DESIGN.md."""
    return orjson.dumps({"error": {"category": category, "message": message,
                                   "fields": [v.as_dict() for v in violations]}})


YOUNG_COLLECTION_THRESHOLD = 50_000
"""Allocations (net) between two collections of the youngest generation; CPython's default
is 700."""


def _tune_garbage_collector() -> None:
    """Move everything allocated while starting out of the collector's sight, and collect the
    young generation rarely.

    A served model drags in ~130k long-lived objects; every full collection walked all of them:
    55-110 ms pauses about every 1,700 requests, ~40 µs per request on average, and a pause
    long enough to time out a whole batch at once. After ``gc.freeze()`` collections scan only
    what requests allocate (measured: CPU per request -15 %, p99 81 -> 23 ms at 64
    connections). The frozen objects are still freed normally by reference counting.

    Requests leave no reference cycles behind (``tests/test_runtime_gc.py`` serves every path
    of the demo with the collector off and finds nothing for it), so collecting the young
    generation every 700 allocations only re-scanned the objects of requests in flight. Raising
    the threshold took the tabular bench at 64 connections from 0.85x to 0.89x the raw
    batcher's throughput (``bench/batching.py``, back to back; docs/performance.md). A service
    whose own code does leave cycles still has them collected, after 50k allocations.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


class Runtime:
    def __init__(self, service: Service, settings: Settings,
                 extra_sinks: list[EventSink] | None = None) -> None:
        assert service.responder is not None
        self.service = service
        self.settings = settings
        self.metrics = ServiceMetrics(service.name)
        self.connections = Connections()
        sinks: list[EventSink] = [JsonlSink(settings.events_dir), *(extra_sinks or [])]
        self.events = EventLog(sinks, capacity=settings.events_buffer,
                               on_dropped=self.metrics.count_events_dropped)
        self.pipeline = Pipeline(service, self.metrics, model_threads=settings.model_threads,
                                 native_threads=settings.model_native_threads,
                                 cache_url=settings.cache_store_url,
                                 guardrail_url=settings.guardrail_store_url)
        self.ready = False
        self.draining = False
        self._pid = os.getpid()
        self._flusher: asyncio.Task[None] | None = None
        self._parse = service.input.parser(max_depth=settings.max_json_depth)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.events.start()
        if multiprocess_enabled():  # other workers' scrapes read this one's files
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_metrics_every(FLUSH_INTERVAL), name="metrics")
        await self.pipeline.open(self.connections)
        for name, factory in self.service.resources.items():
            self.pipeline.resources[name] = await factory(self)
        for hook in self.service.startup_hooks:
            await hook(self)
        if self.service.example is not None:
            await self._warm_up()
        _tune_garbage_collector()
        self.ready = True

    async def _warm_up(self) -> None:
        """Run the example request until every model thread has served it, so the first real
        requests pay no cold start (thread-pool spin-up, OpenMP initialisation, lazy imports).
        Warm-up requests are not recorded and do not count towards breakers."""
        example = orjson.dumps(self.service.example)
        for _round in range(2):
            answers = await asyncio.gather(*(
                self.answer(example, request_id="warm-up", record=False, bypass_cache=True,
                            warm_up=True, deadline_s=self.settings.max_deadline)
                for _ in range(2 * self.settings.model_threads)))
        for answer in answers:
            if answer.status != 200 or answer.context.fallbacks:
                log.warning("warm-up request answered %s with fallbacks %s: %s", answer.status,
                            answer.context.fallback_categories, answer.body[:200])
                break
        self.pipeline.reset_breakers()

    async def stop(self) -> None:
        self.ready = False
        for hook in self.service.shutdown_hooks:
            await hook(self)
        for resource in self.pipeline.resources.values():
            close = getattr(resource, "aclose", None)
            if close is not None:
                await close()
        await self.pipeline.aclose()
        await self.events.aclose()
        await self.connections.aclose()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self.metrics.flush()
        mark_worker_dead(os.getpid())

    async def _flush_metrics_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.metrics.flush()

    # -- one request -----------------------------------------------------------------------

    def deadline_for(self, requested_ms: str | None) -> float:
        """The request's time budget: the configured deadline, lowered by the client's
        ``X-Deadline-Ms`` if given, never above ``max_deadline``."""
        budget = self.settings.deadline
        if requested_ms:
            try:
                budget = float(requested_ms) / 1000.0
            except ValueError:
                pass
            else:
                budget = max(0.0, budget)
        return min(budget, self.settings.max_deadline)

    async def answer(self, body: bytes, *, request_id: str, deadline_s: float | None = None,
                     bypass_cache: bool = False, record: bool = True,
                     warm_up: bool = False) -> Answer:
        clock = time.perf_counter()
        started = asyncio.get_running_loop().time()  # the loop's clock: deadlines use it
        budget = self.settings.deadline if deadline_s is None else deadline_s
        ctx = RequestContext(request_id, started, started + budget)
        ctx.bypass_cache = bypass_cache
        ctx.warm_up = warm_up
        tally = self.metrics.requests
        tally.in_flight += 1
        try:
            try:
                parsed = self._parse(body)
            except InputRejected as rejected:
                ctx.violations = rejected.violations
                status, payload = rejected.status, error_body(
                    Category.INPUT_INVALID, rejected.message, rejected.violations)
            else:
                # the pipeline is awaited here, not in a helper coroutine: every frame between
                # the request's task and the model is resumed when its batch returns
                ctx.violations = parsed.violations
                try:
                    status, payload = 200, await self.pipeline.run(parsed, ctx)
                except StageFailed as failed:
                    status, payload = 503, self._unanswerable(failed, ctx)
                except Exception as error:  # a bug: answer, count, log; never crash the server
                    log.exception("request %s failed", ctx.request_id)
                    ctx.error = None
                    status, payload = 500, error_body(
                        Category.INTERNAL, f"internal error: {type(error).__name__}")
        finally:
            tally.in_flight -= 1
        if record:
            self.finish(ctx, status, time.perf_counter() - clock)
        return Answer(status, payload, ctx)

    @staticmethod
    def _unanswerable(failed: StageFailed, ctx: RequestContext) -> bytes:
        """The 503 body for a stage that failed without a fallback."""
        if ctx.error is None:  # it failed in a computation this request only shared
            ctx.error = AppliedFallback(failed.stage, failed.category, str(failed))
        return error_body(failed.category, str(failed))

    def reject(self, status: int, message: str, request_id: str) -> Answer:
        """Answer a request refused before it reached the service (e.g. 413 by transport)."""
        now = time.monotonic()
        ctx = RequestContext(request_id, now, now)
        self.finish(ctx, status, 0.0)
        return Answer(status, error_body(Category.INPUT_INVALID, message), ctx)

    def finish(self, ctx: RequestContext, status: int, seconds: float) -> None:
        """Record a ``/predict`` request's metrics and its one event."""
        metrics = self.metrics
        metrics.requests.observe(status, seconds)
        for fallback in ctx.fallbacks:
            metrics.count_fallback(fallback.stage, fallback.category)
        for violation in ctx.violations:
            metrics.count_violation(violation.field, violation.kind, violation.count)
        self.record_event(ctx, status, seconds)

    def record_event(self, ctx: RequestContext, status: int, seconds: float,
                     route: str = PREDICT_ROUTE) -> None:
        """Emit the one event of a served request (``route`` says which endpoint served it)."""
        event = {
            "ts": time.time(),
            "service": self.service.name,
            "request_id": ctx.request_id,
            "route": route,
            "status": status,
            "latency_ms": as_ms(seconds),
            "model_version": ctx.model_version,
            "cache": ctx.cache,
            "fallbacks": ctx.fallback_categories,
            "fallback_stages": [f.stage for f in ctx.fallbacks] if ctx.fallbacks else [],
            "violations": [v.as_dict() for v in ctx.violations] if ctx.violations else [],
            "error_category": (ctx.error.category.value if ctx.error else
                               Category.INPUT_INVALID.value if 400 <= status < 500 else
                               Category.INTERNAL.value if status >= 500 else None),
            "error_stage": ctx.error.stage if ctx.error else None,
            "stage_ms": ctx.stage_ms,
            "pid": self._pid,
        }
        self.events.emit(event)
