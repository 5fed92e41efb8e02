"""Prometheus metrics of one service, with label children bound once.

``.labels(...)`` costs about 0.7 µs a call; binding the children when the service is built
and keeping them in dicts makes each increment a quarter of that (PERFORMANCE.md).

Under ``--workers N`` the CLI sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker imports
prometheus_client, values go to per-process files, and :func:`render` aggregates all of them,
so one scrape shows every worker.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROCESS_ENV))


class ServiceMetrics:
    """The metrics of one built service, in its own registry."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests = Counter(
            "buttress_requests_total", "Requests served, by HTTP status.",
            ["service", "status"], registry=r)
        self._latency = Histogram(
            "buttress_request_duration_seconds", "Time to answer /predict, in seconds.",
            ["service"], buckets=LATENCY_BUCKETS, registry=r).labels(service)
        self._fallbacks = Counter(
            "buttress_fallbacks_total", "Fallbacks served, by stage and error category.",
            ["service", "stage", "category"], registry=r)
        self.in_flight = Gauge(
            "buttress_in_flight_requests", "Requests being served now.",
            ["service"], multiprocess_mode="livesum", registry=r).labels(service)
        self._violations = Counter(
            "buttress_input_contract_violations_total",
            "Input contract violations, by field and kind "
            "(defaulted, renamed, unknown_key, missing, invalid).",
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
        self._bound: dict[tuple[str, ...], Counter] = {}
        self._ok = self._child(self._requests, "200")  # nearly every request: no look-up

    def _child(self, metric: Counter, *labels: str) -> Counter:
        key = (metric._name, *labels)
        child = self._bound.get(key)
        if child is None:
            child = self._bound[key] = metric.labels(self.service, *labels)
        return child

    def observe_request(self, status: int, seconds: float) -> None:
        if status == 200:
            self._ok.inc()
        else:
            self._child(self._requests, str(status)).inc()
        self._latency.observe(seconds)

    def count_fallback(self, stage: str, category: str) -> None:
        self._child(self._fallbacks, stage, category).inc()

    def count_violation(self, field: str, kind: str) -> None:
        self._child(self._violations, field, kind).inc()

    def observe_model(self, model: str, version: str, seconds: float) -> None:
        self._model_latency.labels(self.service, model, version).observe(seconds)

    def set_breaker_open(self, stage: str, is_open: bool) -> None:
        self._breaker_state.labels(self.service, stage).set(1 if is_open else 0)

    def count_events_dropped(self, n: int = 1) -> None:
        self._events_dropped.inc(n)


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
