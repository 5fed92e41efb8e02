"""The dashboard's metric panels: a pure function of two snapshots of the service's metrics.

The snapshots are what :class:`~buttress.observability.alert_values.MetricHistory` keeps (the
samples a scrape would show; every worker's under ``--workers N``), so the numbers are the
server's, never one worker's. Rates and quantiles are taken between the oldest snapshot of
the window and the latest one, as Prometheus's ``rate`` and ``histogram_quantile`` would;
until a second snapshot exists, only totals are known and rates are None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from buttress.observability.alert_values import (
    Snapshot,
    bucket_increase,
    histogram_quantile,
    increase,
    total,
)

REQUESTS = "buttress_requests_total"
LATENCY = "buttress_request_duration_seconds_bucket"
IN_FLIGHT = "buttress_in_flight_requests"
FALLBACKS = "buttress_fallbacks_total"
VIOLATIONS = "buttress_input_contract_violations_total"
CACHE_LOOKUPS = "buttress_cache_lookups_total"
BATCH_ROWS = "buttress_batch_size_rows"
BATCH_WAIT = "buttress_batch_queue_wait_seconds_bucket"
BATCH_QUEUE = "buttress_batch_queue_rows"
GUARDRAIL_TRIPS = "buttress_guardrail_trips_total"
GUARDRAIL_USED = "buttress_guardrail_budget_used"
GUARDRAIL_REMAINING = "buttress_guardrail_budget_remaining"
BREAKER_OPEN = "buttress_breaker_open"
LOOP_LAG = "buttress_event_loop_lag_seconds"

SAMPLES = (REQUESTS, LATENCY, IN_FLIGHT, FALLBACKS, VIOLATIONS, CACHE_LOOKUPS,
           f"{BATCH_ROWS}_bucket", f"{BATCH_ROWS}_sum", f"{BATCH_ROWS}_count", BATCH_WAIT,
           BATCH_QUEUE, GUARDRAIL_TRIPS, GUARDRAIL_USED, GUARDRAIL_REMAINING, BREAKER_OPEN,
           LOOP_LAG)
"""The sample names the panels read: all a history needs to keep."""

MAX_VIOLATION_ROWS = 20
NO_MATCH: Mapping[str, str] = {}


class _Window:
    """Two snapshots and the seconds between them (``old`` None: only the latest exists)."""

    def __init__(self, new: Snapshot, old: Snapshot | None, seconds: float | None) -> None:
        self.new = new
        self.old = old if seconds else None
        self.seconds = seconds or 0.0

    def total(self, name: str, match: Mapping[str, str] = NO_MATCH) -> float:
        return total(self.new, name, match)

    def increase(self, name: str, match: Mapping[str, str] = NO_MATCH) -> float | None:
        return None if self.old is None else increase(self.old, self.new, name, match)

    def rate(self, name: str, match: Mapping[str, str] = NO_MATCH) -> float | None:
        grown = self.increase(name, match)
        return None if grown is None else grown / self.seconds

    def quantile(self, q: float, name: str, match: Mapping[str, str] = NO_MATCH) -> float | None:
        if self.old is None:
            return None
        return histogram_quantile(q, bucket_increase(self.old, self.new, name, match))

    def values(self, name: str, label: str) -> list[str]:
        """The values ``label`` takes in the latest snapshot's samples of ``name``."""
        return sorted({labels[label] for labels, _ in self.new.get(name, ()) if label in labels})


def metric_panels(new: Snapshot, old: Snapshot | None, seconds: float | None) -> dict[str, Any]:
    """Every metric panel's numbers: rates per second over the ``seconds`` between ``old``
    and ``new``, latencies in milliseconds, ratios in [0, 1], totals since the start."""
    window = _Window(new, old, seconds)
    requests = window.increase(REQUESTS)
    return {
        "requests": _requests(window),
        "latency_ms": {"p50": _ms(window.quantile(0.5, LATENCY)),
                       "p99": _ms(window.quantile(0.99, LATENCY))},
        "fallbacks": _fallbacks(window, requests),
        "violations": _violations(window),
        "caches": _caches(window),
        "batches": _batches(window),
        "guardrails": _guardrails(window),
        "breakers": {stage: window.total(BREAKER_OPEN, {"stage": stage}) > 0
                     for stage in window.values(BREAKER_OPEN, "stage")},
        "loop_lag_ms": _ms(window.total(LOOP_LAG) if LOOP_LAG in new else None),
    }


def _requests(window: _Window) -> dict[str, Any]:
    return {"per_s": window.rate(REQUESTS), "total": window.total(REQUESTS),
            "in_flight": window.total(IN_FLIGHT),
            "by_status": {status: window.rate(REQUESTS, {"status": status})
                          for status in window.values(REQUESTS, "status")}}


def _fallbacks(window: _Window, requests: float | None) -> dict[str, Any]:
    """Fallbacks per second and per request, by category (one request may count in several)."""
    categories = []
    for category in window.values(FALLBACKS, "category"):
        match = {"category": category}
        grown = window.increase(FALLBACKS, match)
        categories.append({"category": category, "per_s": window.rate(FALLBACKS, match),
                           "per_request": _ratio(grown, requests),
                           "total": window.total(FALLBACKS, match)})
    return {"per_s": window.rate(FALLBACKS),
            "per_request": _ratio(window.increase(FALLBACKS), requests),
            "by_category": categories}


def _violations(window: _Window) -> list[dict[str, Any]]:
    """Violations by field and kind, the busiest first: a renamed key shows at the top while
    its producer sends it."""
    rows: list[tuple[str, str, float | None, float]] = []
    for labels, value in window.new.get(VIOLATIONS, ()):
        field, kind = labels.get("field", ""), labels.get("kind", "")
        rows.append((field, kind, window.rate(VIOLATIONS, {"field": field, "kind": kind}), value))
    rows.sort(key=lambda r: (-(r[2] or 0.0), -r[3], r[0], r[1]))
    return [{"field": field, "kind": kind, "per_s": per_s, "total": value}
            for field, kind, per_s, value in rows[:MAX_VIOLATION_ROWS]]


def _caches(window: _Window) -> list[dict[str, Any]]:
    caches = []
    for cache in window.values(CACHE_LOOKUPS, "cache"):
        hit, miss = {"cache": cache, "result": "hit"}, {"cache": cache, "result": "miss"}
        hits, misses = window.increase(CACHE_LOOKUPS, hit), window.increase(CACHE_LOOKUPS, miss)
        all_hits, all_misses = window.total(CACHE_LOOKUPS, hit), window.total(CACHE_LOOKUPS, miss)
        caches.append({
            "cache": cache, "lookups_per_s": window.rate(CACHE_LOOKUPS, {"cache": cache}),
            "hit_ratio": _ratio(hits, None if hits is None or misses is None else hits + misses),
            "hit_ratio_total": _ratio(all_hits, all_hits + all_misses),
            "lookups_total": all_hits + all_misses})
    return caches


def _batches(window: _Window) -> list[dict[str, Any]]:
    models = []
    for model in window.values(f"{BATCH_ROWS}_count", "model"):
        match = {"model": model}
        batches = window.increase(f"{BATCH_ROWS}_count", match)
        rows = window.increase(f"{BATCH_ROWS}_sum", match)
        models.append({
            "model": model, "batches_per_s": window.rate(f"{BATCH_ROWS}_count", match),
            "mean_rows": _ratio(rows, batches),
            "p50_rows": window.quantile(0.5, f"{BATCH_ROWS}_bucket", match),
            "p99_rows": window.quantile(0.99, f"{BATCH_ROWS}_bucket", match),
            "queue_wait_p99_ms": _ms(window.quantile(0.99, BATCH_WAIT, match)),
            "queued_rows": window.total(BATCH_QUEUE, match),
            "batches_total": window.total(f"{BATCH_ROWS}_count", match)})
    return models


def _guardrails(window: _Window) -> list[dict[str, Any]]:
    """Each guardrail's busiest key against its limit. The usage gauges hold used and remaining
    budget per key (refreshed every few seconds); their sum is the limit."""
    names = sorted({*window.values(GUARDRAIL_USED, "guardrail"),
                    *window.values(GUARDRAIL_TRIPS, "guardrail")})
    guardrails = []
    for name in names:
        remaining = {labels.get("key", ""): value
                     for labels, value in window.new.get(GUARDRAIL_REMAINING, ())
                     if labels.get("guardrail") == name}
        busiest: dict[str, Any] = {"key": None, "used": None, "limit": None, "share": None}
        for labels, used in window.new.get(GUARDRAIL_USED, ()):
            key = labels.get("key", "")
            if labels.get("guardrail") != name or key not in remaining:
                continue
            limit = used + remaining[key]
            share = used / limit if limit > 0 else (1.0 if used > 0 else 0.0)
            if busiest["share"] is None or share > busiest["share"]:
                busiest = {"key": key, "used": used, "limit": limit, "share": share}
        match = {"guardrail": name}
        guardrails.append({"guardrail": name, **busiest,
                           "trips_per_s": window.rate(GUARDRAIL_TRIPS, match),
                           "trips_total": window.total(GUARDRAIL_TRIPS, match)})
    return guardrails


def _ratio(part: float | None, whole: float | None) -> float | None:
    if part is None or whole is None or whole <= 0:
        return None
    return part / whole


def _ms(seconds: float | None) -> float | None:
    if seconds is None or not math.isfinite(seconds):
        return None
    return seconds * 1000.0
