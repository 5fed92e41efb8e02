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
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from buttress.backends import Connections
from buttress.interface import InputRejected
from buttress.observability.alerts import AlertEvaluator, evaluator_for
from buttress.observability.events import (
    SCHEMA_VERSION,
    Deferred,
    Event,
    EventLog,
    EventSink,
    JsonlSink,
    Retention,
    StdoutSink,
)
from buttress.observability.exceptions import TRACEBACK_INTERVAL, ExceptionEvents
from buttress.observability.metrics import (
    FLUSH_INTERVAL,
    ServiceMetrics,
    mark_worker_dead,
    multiprocess_enabled,
    watch_loop_lag,
)
from buttress.pipeline.context import RequestContext
from buttress.pipeline.door import Door
from buttress.pipeline.engine import Pipeline
from buttress.pipeline.follow import RegistryModels
from buttress.pipeline.stage import StageFailed
from buttress.resilience.admission import Admission, ConcurrencyLimit
from buttress.resilience.categories import Category, error_body
from buttress.resilience.deadline import requested_budget
from buttress.resilience.durations import as_ms

if TYPE_CHECKING:
    from buttress.config import Settings
    from buttress.pipeline.live import ModelSet
    from buttress.service import Service

log = logging.getLogger("buttress")

PREDICT_ROUTE = "/predict"


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes
    context: RequestContext

    @property
    def retry_after(self) -> bool:
        """Refused for overload with no fallback: the client should retry shortly."""
        error = self.context.error
        return error is not None and error.category is Category.OVERLOADED


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
        retention = Retention(settings.events_rotate_bytes, settings.events_rotate_interval,
                              settings.events_keep_days, settings.events_keep_bytes)
        sinks: list[EventSink] = [JsonlSink(settings.events_dir, retention)]
        if settings.events_stdout:
            sinks.append(StdoutSink())
        self.events = EventLog([*sinks, *(extra_sinks or [])], capacity=settings.events_buffer,
                               on_dropped=self.metrics.count_events_dropped)
        self.exceptions = ExceptionEvents(service.name, self.events.emit,
                                          traceback_interval=TRACEBACK_INTERVAL)
        """One event per caught exception (stages record theirs here too)."""
        self._summary = service.prediction_summary
        self._sample_rate = settings.log_sample_rate
        self.pipeline = Pipeline(service, self.metrics, self.exceptions,
                                 model_threads=settings.model_threads,
                                 native_threads=settings.model_native_threads,
                                 cache_url=settings.cache_store_url,
                                 guardrail_url=settings.guardrail_store_url)
        self.ready = False
        self.draining = False
        self._pid = os.getpid()
        self._flusher: asyncio.Task[None] | None = None
        self._parse = service.input.parser(max_depth=settings.max_json_depth)
        limit = admission_limit(settings, service)
        self.door = Door(limit) if limit is not None else None
        """At most the learned number of requests in the pipeline, a short wait for the next
        (``buttress.pipeline.door``); None: every request is let in."""
        self._shed_with_fallback = settings.overload_response == "fallback"
        self.registry_models: RegistryModels | None = (
            RegistryModels(self) if any(s.from_registry for s in self.pipeline.stages.values())
            else None)
        """The model stages served from the registry, followed while running."""
        self.alerts: AlertEvaluator | None = None
        if settings.alerts:  # a registry model gives the rules' "rollback" action its meaning
            actions = self.registry_models.alert_actions() if self.registry_models else {}
            self.alerts = evaluator_for(settings, self.metrics, service.name, emit=self.events.emit,
                                        actions={**actions, **service.alert_actions})
        self._background: list[asyncio.Task[None]] = []

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
        if self.registry_models is not None:  # after the hooks: one may register versions
            await self.registry_models.open()
        if self.service.example is not None:
            await self._warm_up()
        _tune_garbage_collector()
        loop = asyncio.get_running_loop()
        self._background.append(loop.create_task(watch_loop_lag(self.metrics), name="loop-lag"))
        if self.alerts is not None:
            self._background.append(loop.create_task(self.alerts.run(), name="alerts"))
        if self.registry_models is not None:
            self.registry_models.follow()
        self.ready = True

    async def _warm_up(self) -> None:
        """Run the example request until every model thread has served it, so the first real
        requests pay no cold start (thread-pool spin-up, OpenMP initialisation, lazy imports).
        Warm-up requests are not recorded and do not count towards breakers."""
        for answer in await self.warm_up_models(self.pipeline.models):
            if answer.status != 200 or answer.context.fallbacks:
                log.warning("warm-up request answered %s with fallbacks %s: %s", answer.status,
                            answer.context.fallback_categories, answer.body[:200])
                break
        self.pipeline.reset_breakers()

    async def warm_up_models(self, models: ModelSet) -> list[Answer]:
        """The example answered through ``models`` (twice on every model thread); the
        answers of the last round. Neither recorded nor spending guardrail budgets."""
        assert self.service.example is not None
        example = orjson.dumps(self.service.example)
        for _round in range(2):
            answers = await asyncio.gather(*(
                self.answer(example, request_id="warm-up", record=False, bypass_cache=True,
                            warm_up=True, deadline_s=self.settings.max_deadline, models=models)
                for _ in range(2 * self.settings.model_threads)))
        return answers

    async def stop(self) -> None:
        self.ready = False
        if self.registry_models is not None:
            await self.registry_models.aclose()
        for task in self._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._background.clear()
        if self.alerts is not None:
            await self.alerts.aclose()
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
        ``X-Deadline-Ms`` if given, never above ``max_deadline``. Raises
        :class:`~buttress.resilience.deadline.InvalidDeadline` for a malformed header."""
        return requested_budget(requested_ms, self.settings.deadline, self.settings.max_deadline)

    async def answer(self, body: bytes, *, request_id: str, deadline_s: float | None = None,
                     bypass_cache: bool = False, record: bool = True,
                     warm_up: bool = False, models: ModelSet | None = None,
                     route: str = PREDICT_ROUTE) -> Answer:
        clock = clock_in = time.perf_counter()
        started = asyncio.get_running_loop().time()  # the loop's clock: deadlines use it
        budget = self.settings.deadline if deadline_s is None else deadline_s
        ctx = RequestContext(request_id, started, started + budget)
        ctx.bypass_cache = bypass_cache
        ctx.warm_up = warm_up
        ctx.models = models  # None: the pipeline's current set
        tally = self.metrics.requests
        tally.in_flight += 1
        door = None if warm_up else self.door
        entered = door is None or door.enter()
        request: Any = None
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
                request = parsed.value
                try:
                    if not entered:  # past the limit: wait a little for a slot, or be shed
                        assert door is not None
                        entered = await door.wait(budget)
                        clock_in = time.perf_counter()
                    if entered:
                        status, payload = 200, await self.pipeline.run(parsed, ctx)
                    else:
                        status, payload = 200, self.pipeline.shed(
                            parsed, ctx, with_fallback=self._shed_with_fallback)
                except StageFailed as failed:
                    status, payload = 503, self._unanswerable(failed, ctx)
                except Exception as error:  # a bug: answer, count, log; never crash the server
                    log.exception("request %s failed", ctx.request_id)
                    self.exceptions.record("pipeline", Category.INTERNAL, error, ctx.request_id)
                    ctx.error = None
                    status, payload = 500, error_body(
                        Category.INTERNAL, f"internal error: {type(error).__name__}")
        finally:
            tally.in_flight -= 1
            if door is not None and entered:
                inside = door.inside
                door.leave()
        now = time.perf_counter()
        seconds = now - clock
        if door is not None and entered:
            door.limit.sample(now - clock_in, inside, ctx.timed_out)
        if record:
            versions = ctx.models.tally if ctx.models is not None else None
            if versions is not None:  # the rollback rules' per-version counts
                versions.request(status, bool(ctx.fallbacks), seconds)
            prediction = None
            if self._summary is not None and request is not None:
                prediction = self._prediction(ctx, status, request, payload)
            self.finish(ctx, status, seconds, prediction, route)
        return Answer(status, payload, ctx)

    def _prediction(self, ctx: RequestContext, status: int, request: Any,
                    body: bytes) -> Deferred | None:
        """What the event's ``prediction`` summary is made from, or None for a clean success
        left out by ``log_sample_rate``. The writer computes it (``Deferred``): decoding the
        response and the user's function cost the request nothing."""
        if status != 200:
            return Deferred(self._summarize, request, None, None)
        if not ctx.fallbacks and self._sample_rate < 1.0 and random.random() >= self._sample_rate:
            return None
        return Deferred(self._summarize, request, ctx.response, body)

    def _summarize(self, request: Any, response: Any, body: bytes | None) -> Any:
        """The summary, from the response object when the request built one, else decoded
        from its body (a cached answer)."""
        assert self._summary is not None
        if response is None and body is not None:
            output = self.service.output
            response = (output.model_validate_json(body) if output is not None
                        else orjson.loads(body))
        return self._summary(request, response)

    def record_exception(self, stage: str, category: Category | str, error: BaseException,
                         request_id: str | None = None) -> Event:
        """Emit the event of one caught exception (``kind: exception``); the traceback only
        for the first of a distinct error (stage + type) within ``TRACEBACK_INTERVAL``.
        Call it where the failure is caught, next to the log line."""
        return self.exceptions.record(stage, category, error, request_id)

    @staticmethod
    def _unanswerable(failed: StageFailed, ctx: RequestContext) -> bytes:
        """The 503 body for a stage that failed without a fallback."""
        if ctx.error is None:  # it failed in a computation this request only shared
            ctx.fail(failed.stage, failed.category, str(failed))
        return error_body(failed.category, str(failed))

    def reject(self, status: int, message: str, request_id: str,
               route: str = PREDICT_ROUTE) -> Answer:
        """Answer a request refused before it reached the service (e.g. 413 by transport)."""
        now = time.monotonic()
        ctx = RequestContext(request_id, now, now)
        self.finish(ctx, status, 0.0, route=route)
        return Answer(status, error_body(Category.INPUT_INVALID, message), ctx)

    def finish(self, ctx: RequestContext, status: int, seconds: float,
               prediction: Deferred | None = None, route: str = PREDICT_ROUTE) -> None:
        """Record a request's metrics and its one event (``route``: ``/predict`` or the
        stream that carried it)."""
        metrics = self.metrics
        metrics.requests.observe(status, seconds)
        for fallback in ctx.fallbacks:
            metrics.count_fallback(fallback.stage, fallback.category)
        for violation in ctx.violations:
            metrics.count_violation(violation.field, violation.kind, violation.count)
        self.record_event(ctx, status, seconds, route, prediction)

    def record_event(self, ctx: RequestContext, status: int, seconds: float,
                     route: str = PREDICT_ROUTE, prediction: Deferred | None = None) -> None:
        """Emit the one event of a served request (``route`` says which endpoint served it).
        The fields are docs/observability.md's schema ``v`` 1."""
        event = {
            "v": SCHEMA_VERSION,
            "kind": "request",
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
            "prediction": prediction,
            "pid": self._pid,
        }
        self.events.emit(event)


def admission_limit(settings: Settings, service: Service) -> ConcurrencyLimit | None:
    """The door's limit for ``max_concurrency``: learned (``auto``), fixed, or none.

    Learned, it keeps admitted requests healthy: their stages' own timeouts not firing, and
    their mean time in the server under ``admission_target`` (by default half the deadline).
    """
    setting = settings.max_concurrency
    if setting == "off":
        return None
    if setting != "auto":
        fixed = int(setting)
        return Admission("1h", initial_limit=fixed, min_limit=fixed, max_limit=fixed).build(
            time.monotonic)
    target = settings.admission_target or settings.deadline / 2
    return Admission(target).build(time.monotonic)
