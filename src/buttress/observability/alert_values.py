"""The numbers alert rules watch: metric values, rates, ratios and quantiles from snapshots
of the Prometheus registry over time, and the first cell of insight queries over the recent
event files. Pure functions and a small history; the evaluator (:mod:`.alerts`) drives them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from prometheus_client.metrics_core import Metric

from buttress.observability.alert_rules import AlertRule
from buttress.observability.insights import InsightsError, run_query, saved_query

Snapshot = dict[str, list[tuple[dict[str, str], float]]]


class MetricHistory:
    """Snapshots of the samples the rules read, kept as long as the longest window.

    ``names`` and ``keep`` add samples and time of their own: the dashboard keeps a history of
    the samples its panels read (``buttress.dashboard``), with no rule at all."""

    def __init__(self, rules: Sequence[AlertRule] = (), *, names: Iterable[str] = (),
                 keep: float = 0.0) -> None:
        self._names: set[str] = set(names)
        for rule in rules:
            if rule.metric is None:
                continue
            self._names.add(rule.metric)
            if rule.over is not None:
                self._names.add(rule.over)
            if rule.function == "quantile":
                self._names.add(f"{rule.metric.removesuffix('_bucket')}_bucket")
        self._keep = max(keep, max((r.window for r in rules if r.metric), default=0.0))
        self._snapshots: deque[tuple[float, Snapshot]] = deque()

    def record(self, now: float, families: Iterable[Metric]) -> None:
        snapshot: Snapshot = {}
        for family in families:
            for sample in family.samples:
                if sample.name in self._names:
                    snapshot.setdefault(sample.name, []).append((sample.labels, sample.value))
        self._snapshots.append((now, snapshot))
        while len(self._snapshots) > 2 and self._snapshots[1][0] <= now - self._keep:
            self._snapshots.popleft()

    @property
    def latest(self) -> tuple[float, Snapshot] | None:
        """The last snapshot recorded, with its time."""
        return self._snapshots[-1] if self._snapshots else None

    def span(self, now: float, window: float) -> tuple[float, Snapshot, float, Snapshot] | None:
        """The oldest snapshot within ``window`` of ``now`` and the latest, with their times
        (None until two snapshots exist)."""
        if len(self._snapshots) < 2:
            return None
        then, old = self._snapshots[0]
        for stamp, snapshot in self._snapshots:  # the oldest one inside the window
            if stamp >= now - window:
                then, old = stamp, snapshot
                break
        latest, new = self._snapshots[-1]
        if latest <= then:
            return None
        return then, old, latest, new

    def value(self, rule: AlertRule, now: float) -> float | None:
        assert rule.metric is not None
        if rule.function == "value":
            if not self._snapshots:
                return None
            return total(self._snapshots[-1][1], rule.metric, rule.match)
        span = self.span(now, rule.window)
        if span is None:
            return None
        then, old, latest, new = span
        elapsed = latest - then
        if rule.function == "rate":
            return increase(old, new, rule.metric, rule.match) / elapsed
        if rule.function == "ratio":
            assert rule.over is not None
            denominator = increase(old, new, rule.over, rule.over_match)
            if denominator <= 0:
                return None
            return increase(old, new, rule.metric, rule.match) / denominator
        assert rule.quantile is not None
        name = f"{rule.metric.removesuffix('_bucket')}_bucket"
        return histogram_quantile(rule.quantile, bucket_increase(old, new, name, rule.match))


def matches(labels: Mapping[str, str], match: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in match.items())


def total(snapshot: Snapshot, name: str, match: Mapping[str, str]) -> float:
    """The sum of the samples of ``name`` whose labels include ``match``."""
    return sum(v for labels, v in snapshot.get(name, ()) if matches(labels, match))


def increase(old: Snapshot, new: Snapshot, name: str, match: Mapping[str, str]) -> float:
    """How much a counter's matching series grew from ``old`` to ``new``."""
    # a worker restart resets its counters: never a negative rate
    return max(0.0, total(new, name, match) - total(old, name, match))


def bucket_increase(old: Snapshot, new: Snapshot, name: str,
                    match: Mapping[str, str]) -> list[tuple[float, float]]:
    """A histogram's cumulative ``(le, count)`` buckets of what was observed between the two
    snapshots, for :func:`histogram_quantile`."""
    def by_le(snapshot: Snapshot) -> dict[float, float]:
        counts: dict[float, float] = {}
        for labels, value in snapshot.get(name, ()):
            if matches(labels, match) and "le" in labels:
                le = float(labels["le"])
                counts[le] = counts.get(le, 0.0) + value
        return counts

    before, after = by_le(old), by_le(new)
    return sorted((le, max(0.0, count - before.get(le, 0.0))) for le, count in after.items())


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus's ``histogram_quantile`` over cumulative ``(le, count)`` buckets: linear
    interpolation inside the bucket that holds the rank; the +Inf bucket gives the largest
    finite bound."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower_bound
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return lower_bound


RuleValues = dict[str, tuple[float | None, str | None]]


def query_values(rules: Sequence[AlertRule], events_dir: str | Path,
                 saved: Mapping[str, str], now: float) -> RuleValues:
    """Each query rule's number over its window of events (blocking: DuckDB reads files),
    and why there is none when there is not."""
    values: RuleValues = {}
    for rule in rules:
        try:
            sql = rule.query if rule.query is not None else saved_query(rule.saved or "", saved)
            result = run_query(events_dir, sql, since=now - rule.window)
            cell = result.rows[0][0] if result.rows and result.rows[0] else None
            values[rule.name] = (None if cell is None else float(cell), None)
        except InsightsError as error:  # no events yet, or a bad query: no data
            values[rule.name] = (None, str(error).splitlines()[0])
        except (TypeError, ValueError) as error:
            values[rule.name] = (None, f"the query's first cell is not a number: {error}")
    return values
