"""Prometheus metrics of one service, with label children bound once.

``.labels(...)`` costs about 0.7 µs a call; binding the children when the service is built
and keeping them in dicts makes each increment a quarter of that (docs/performance.md).

The metrics every request touches (in flight, requests by status, latency) are tallied as
plain numbers and moved into Prometheus in bulk (:class:`RequestTally`): each
prometheus_client ``inc`` takes a lock and re-checks its labels, four times a request. The
tally is flushed whenever the registry is collected (a scrape, ``get_sample_value``) and, for
``--workers N``, every :data:`FLUSH_INTERVAL` seconds so other workers' scrapes see it.

Under ``--workers N`` the CLI sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker imports
prometheus_client, values go to per-process files, and :func:`render` aggregates all of them,
so one scrape shows every worker.
"""

from __future__ import annotations

import asyncio
import math
import os
from bisect import bisect_left
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
FLUSH_INTERVAL = 1.0
"""Seconds between moves of a worker's request tally into its multiprocess files."""
CONNECTION_CLOSE_REASONS = ("read_timeout", "max_connections")


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROCESS_ENV))


class ServiceMetrics:
    """The metrics of one built service, in its own registry."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        r.register(_FlushFirst(self))  # collected before the metrics it flushes into
        self._requests = Counter(
            "buttress_requests_total", "Requests served, by HTTP status.",
            ["service", "status"], registry=r)
        self._latency = Histogram(
            "buttress_request_duration_seconds", "Time to answer /predict, in seconds.",
            ["service"], buckets=LATENCY_BUCKETS, registry=r).labels(service)
        self._fallbacks = Counter(
            "buttress_fallbacks_total", "Fallbacks served, by stage and error category.",
            ["service", "stage", "category"], registry=r)
        self._in_flight = Gauge(
            "buttress_in_flight_requests", "Requests being served now.",
            ["service"], multiprocess_mode="livesum", registry=r).labels(service)
        self._violations = Counter(
            "buttress_input_contract_violations_total",
            "Input contract violations, by field and kind "
            "(defaulted, renamed, unknown_key, missing, invalid); every unknown key is "
            "field=\"<unknown>\".",
            ["service", "field", "kind"], registry=r)
        self._model_latency = Histogram(
            "buttress_model_latency_seconds", "Time of one model call (a batch), in seconds.",
            ["service", "model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_rows = Histogram(
            "buttress_batch_size_rows", "Rows per model batch.", ["service", "model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=r)
        self.batch_wait = Histogram(
            "buttress_batch_queue_wait_seconds",
            "Queue wait of the oldest item of each batch, in seconds.", ["service", "model"],
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1), registry=r)
        self.batch_queue = Gauge(
            "buttress_batch_queue_rows", "Rows waiting in a model's batch queue.",
            ["service", "model"], multiprocess_mode="livesum", registry=r)
        self.cache_lookups = Counter(
            "buttress_cache_lookups_total", "Cache look-ups, by cache and result (hit, miss).",
            ["service", "cache", "result"], registry=r)
        self.cache_sets = Counter(
            "buttress_cache_sets_total", "Values written to a cache.", ["service", "cache"],
            registry=r)
        self.cache_evictions = Counter(
            "buttress_cache_evictions_total", "Entries evicted from a memory cache (LRU).",
            ["service", "cache"], registry=r)
        self.cache_errors = Counter(
            "buttress_cache_errors_total", "Cache backend failures (served as misses).",
            ["service", "cache"], registry=r)
        self.guardrail_trips = Counter(
            "buttress_guardrail_trips_total", "Requests a guardrail refused (over budget).",
            ["service", "guardrail"], registry=r)
        self.guardrail_used = Gauge(
            "buttress_guardrail_budget_used", "Budget used in the current window; key is empty "
            "for a global guardrail, else one of the top keys.", ["service", "guardrail", "key"],
            multiprocess_mode="livemax", registry=r)
        self.guardrail_remaining = Gauge(
            "buttress_guardrail_budget_remaining", "Budget left in the current window.",
            ["service", "guardrail", "key"], multiprocess_mode="livemin", registry=r)
        self._breaker_state = Gauge(
            "buttress_breaker_open", "1 while a stage's circuit breaker is open or half-open.",
            ["service", "stage"], multiprocess_mode="livemax", registry=r)
        self._events_dropped = Counter(
            "buttress_events_dropped_total", "Events dropped because the buffer was full.",
            ["service"], registry=r).labels(service)
        self._model_changes = Counter(
            "buttress_model_changes_total", "Registry changes made through this service "
            "(action: register, promote, rollback).", ["service", "model", "action"], registry=r)
        self._models_refused = Counter(
            "buttress_model_loads_refused_total", "Model artifacts refused at load (reason: "
            "checksum, missing, pickle, untrusted_types).", ["service", "model", "reason"],
            registry=r)
        self._alerts_firing = Gauge(
            "buttress_alerts_firing", "1 while an alert rule is firing.", ["service", "alert"],
            multiprocess_mode="livemax", registry=r)
        self._loop_lag = Gauge(
            "buttress_event_loop_lag_seconds", "How late the event loop ran a timer, in "
            "seconds (the largest over the last second): CPU-bound work on the loop.",
            ["service"], multiprocess_mode="livemax", registry=r).labels(service)
        self._tasks = Gauge(
            "buttress_event_loop_tasks", "asyncio tasks alive in this process when the metrics "
            "were last read: a count that keeps growing at a steady load is a task leak.",
            ["service"], multiprocess_mode="livesum", registry=r).labels(service)
        if not multiprocess_enabled():
            # process_cpu_seconds_total, process_resident_memory_bytes, open fds...; under
            # --workers N the multiprocess aggregate has no per-process collectors
            ProcessCollector(registry=r)
        connections_closed = Counter(
            "buttress_connections_closed_total",
            "Connections the server closed itself, by reason (read_timeout: the request was "
            "not read within read_timeout; max_connections: one past the cap).",
            ["service", "reason"], registry=r)
        self._connections_closed = {reason: connections_closed.labels(service, reason)
                                    for reason in CONNECTION_CLOSE_REASONS}
        self._bound: dict[tuple[str, ...], Counter] = {}
        self.requests = RequestTally(LATENCY_BUCKETS)
        """Requests in flight, by status and by latency: plain numbers on the request path."""
        self._child(self._requests, "200")  # shown at 0 before the first request

    def _child(self, metric: Counter, *labels: str) -> Counter:
        key = (metric._name, *labels)
        child = self._bound.get(key)
        if child is None:
            child = self._bound[key] = metric.labels(self.service, *labels)
        return child

    def flush(self) -> None:
        """Move the request tally into the Prometheus metrics."""
        tally = self.requests
        for status, count in tally.take_statuses():
            self._child(self._requests, str(status)).inc(count)
        buckets, total = tally.take_latencies()
        if total is not None:
            # prometheus_client has no bulk observe; its buckets and sum are plain values
            for value, count in zip(self._latency._buckets, buckets, strict=True):
                if count:
                    value.inc(count)
            self._latency._sum.inc(total)
        self._in_flight.set(tally.in_flight)
        self._count_tasks()

    def _count_tasks(self) -> None:
        """Counted when read (a scrape, or the multiprocess flush every second), not kept up
        on the request path. A read from a thread without an event loop keeps the last count."""
        try:
            tasks = asyncio.all_tasks()
        except RuntimeError:
            return
        self._tasks.set(len(tasks))

    def render(self) -> tuple[bytes, str]:
        """The exposition for ``/metrics``, this worker's tally included. (A single-process
        scrape flushes through ``_FlushFirst`` anyway; a multiprocess one reads the files
        through a registry of its own, so this worker flushes first.)"""
        if multiprocess_enabled():
            self.flush()
        return render(self.registry)

    def count_fallback(self, stage: str, category: str) -> None:
        self._child(self._fallbacks, stage, category).inc()

    def count_violation(self, field: str, kind: str, count: int = 1) -> None:
        self._child(self._violations, field, kind).inc(count)

    def observe_model(self, model: str, version: str, seconds: float) -> None:
        self._model_latency.labels(self.service, model, version).observe(seconds)

    def set_breaker_open(self, stage: str, is_open: bool) -> None:
        self._breaker_state.labels(self.service, stage).set(1 if is_open else 0)

    def count_model_change(self, model: str, action: str) -> None:
        self._child(self._model_changes, model, action).inc()

    def count_model_refused(self, model: str, reason: str) -> None:
        self._child(self._models_refused, model, reason).inc()
    def count_connection_closed(self, reason: str) -> None:
        """One of :data:`CONNECTION_CLOSE_REASONS` (a fixed set: bounded labels)."""
        self._connections_closed[reason].inc()

    def count_events_dropped(self, n: int = 1) -> None:
        self._events_dropped.inc(n)

    def set_alert_firing(self, alert: str, firing: bool) -> None:
        self._alerts_firing.labels(self.service, alert).set(1 if firing else 0)

    def set_loop_lag(self, seconds: float) -> None:
        self._loop_lag.set(seconds)

    def collect(self) -> list[Metric]:
        """Every metric family as a scrape would see it (all workers under ``--workers N``;
        reading their files is I/O, so call that from a thread after :meth:`flush`)."""
        if multiprocess_enabled():
            from prometheus_client import multiprocess

            aggregate = CollectorRegistry()
            multiprocess.MultiProcessCollector(aggregate)  # type: ignore[no-untyped-call]
            return list(aggregate.collect())
        return list(self.registry.collect())

    async def collect_off_loop(self) -> list[Metric]:
        """:meth:`collect` for code on the event loop (the alert evaluator, the dashboard):
        under ``--workers N`` this worker's tally is flushed, then every worker's files are
        read in a thread."""
        if not multiprocess_enabled():
            return self.collect()
        self.flush()
        return await asyncio.to_thread(self.collect)


async def watch_loop_lag(metrics: ServiceMetrics, period: float = 0.25,
                         report_every: int = 4) -> None:
    """How late a timer fires: CPU-bound work holding the event loop. The gauge shows the
    worst of the last ``report_every`` periods (one second). Runs until cancelled."""
    loop = asyncio.get_running_loop()
    worst, count = 0.0, 0
    while True:
        started = loop.time()
        await asyncio.sleep(period)
        worst = max(worst, loop.time() - started - period)
        count += 1
        if count == report_every:
            metrics.set_loop_lag(worst)
            worst, count = 0.0, 0


class RequestTally:
    """What each request adds to the request metrics, as plain numbers until flushed.

    ``in_flight`` is a plain counter the runtime moves itself. ``observe`` counts the status
    and finds the latency's bucket the way a Prometheus histogram does (the first upper
    bound >= the value); ``take_*`` hand the counts over and start afresh.
    """

    __slots__ = ("_bounds", "_buckets", "_statuses", "_sum", "in_flight")

    def __init__(self, bounds: Iterable[float]) -> None:
        self._bounds = (*bounds, math.inf)
        self._buckets = [0] * len(self._bounds)
        self._statuses: dict[int, int] = {}
        self._sum = 0.0
        self.in_flight = 0

    def observe(self, status: int, seconds: float) -> None:
        statuses = self._statuses
        statuses[status] = statuses.get(status, 0) + 1
        self._buckets[bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds

    def take_statuses(self) -> list[tuple[int, int]]:
        taken = list(self._statuses.items())
        self._statuses.clear()
        return taken

    def take_latencies(self) -> tuple[list[int], float | None]:
        """Counts per bucket and their sum (None: nothing observed since the last take)."""
        if not any(self._buckets):
            return self._buckets, None
        taken, total = self._buckets, self._sum
        self._buckets, self._sum = [0] * len(self._bounds), 0.0
        return taken, total


class _FlushFirst:
    """A collector that yields nothing but flushes the request tally when a registry is
    collected, so readers of the registry (scrapes, tests) see every request."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> list[Metric]:
        self._metrics.flush()
        return []


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The Prometheus text exposition: of every worker in multiprocess mode, else of one."""
    if multiprocess_enabled():
        from prometheus_client import multiprocess

        aggregate = CollectorRegistry()
        multiprocess.MultiProcessCollector(aggregate)  # type: ignore[no-untyped-call]
        return generate_latest(aggregate), CONTENT_TYPE_LATEST
    return generate_latest(registry), CONTENT_TYPE_LATEST


def prepare_multiprocess_dir(path: str) -> None:
    """Wipe and create the multiprocess directory before workers start.

    Stale files from an earlier run would be summed into this run's counters, and the file
    count would grow with every restart (prometheus/client_python #367, #568).
    """
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)


def mark_worker_dead(pid: int) -> None:
    """Drop a stopped worker's live gauges (in-flight, breaker) from the aggregate."""
    if multiprocess_enabled():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
