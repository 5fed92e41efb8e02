"""The tally of a traffic run: totals, per-second buckets and latency, turned into reports.

Memory stays bounded however long the run: per-second buckets are kept for the last minute,
exact latencies for the last ``window`` seconds (for the live p50/p99), and the whole run's
latencies as a log-bucketed histogram (quantiles within 1%). All times are seconds since the
start of the run, passed in by the caller, so tests feed outcomes without a clock or a sleep.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

LATENCY_WINDOW = 10.0  # seconds of exact latencies behind the live p50/p99
RATE_WINDOW = 5  # complete seconds behind a fallback's rate/s
SPARK_SECONDS = 30  # per-second history in a report
_KEEP_SECONDS = 60
_BUCKET_GROWTH = math.log(1.02)  # histogram bucket width: each is 2% wider than the last
_BUCKET_FLOOR = 1e-6


@dataclass(frozen=True, slots=True)
class Outcome:
    """What came back for one request: a status, or the name of the transport error."""

    status: int | None
    latency: float
    error: str = ""
    fallbacks: tuple[str, ...] = ()
    cache: str = ""
    model_version: str = ""


@dataclass(frozen=True)
class Latency:
    """Seconds."""

    p50: float = 0.0
    p99: float = 0.0
    max: float = 0.0


@dataclass(frozen=True)
class TrafficReport:
    """A picture of the run so far (live) or of the whole run (at the end)."""

    url: str
    elapsed: float
    target_rate: float
    sent: Mapping[str, int]  # by request kind
    skipped: int  # due while `concurrency` requests were in flight
    in_flight: int
    statuses: Mapping[int, int]
    errors: Mapping[str, int]  # no HTTP answer, by exception type
    fallbacks: Mapping[str, int]  # by category, from X-Fallback
    fallback_rates: Mapping[str, float]  # per second over the last RATE_WINDOW seconds
    cache: Mapping[str, int]  # by X-Cache value
    model_versions: Mapping[str, int]
    latency: Latency  # the last LATENCY_WINDOW seconds
    run_latency: Latency  # the whole run
    per_second: tuple[int, ...] = ()  # answers in each of the last complete seconds, oldest first
    burst: bool = False
    outage: bool = False

    @property
    def total_sent(self) -> int:
        return sum(self.sent.values())

    @property
    def connection_errors(self) -> int:
        return sum(self.errors.values())

    @property
    def completed(self) -> int:
        return sum(self.statuses.values()) + self.connection_errors

    @property
    def achieved_rate(self) -> float:
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class _Second:
    answers: int = 0
    fallbacks: Counter[str] = field(default_factory=Counter)


class _LogHistogram:
    """Whole-run latency quantiles in constant memory (a bucket per 2% of latency)."""

    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()
        self._count = 0

    def add(self, value: float) -> None:
        bucket = int(math.log(max(value, _BUCKET_FLOOR) / _BUCKET_FLOOR) / _BUCKET_GROWTH)
        self._buckets[bucket] += 1
        self._count += 1

    def quantile(self, q: float) -> float:
        rank, seen = max(1, math.ceil(q * self._count)), 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                return _BUCKET_FLOOR * math.exp((bucket + 0.5) * _BUCKET_GROWTH)  # mid-bucket
        return 0.0


class TrafficStats:
    """Fed one outcome at a time by the driver; asked for a :class:`TrafficReport` now and then."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.target_rate = 0.0
        self.skipped = 0
        self._sent: Counter[str] = Counter()
        self._statuses: Counter[int] = Counter()
        self._errors: Counter[str] = Counter()
        self._fallbacks: Counter[str] = Counter()
        self._cache: Counter[str] = Counter()
        self._versions: Counter[str] = Counter()
        self._recent: deque[tuple[float, float]] = deque()  # (answered at, latency)
        self._seconds: dict[int, _Second] = {}  # by second since the start, the last minute
        self._run = _LogHistogram()
        self._max = 0.0

    def record_sent(self, kind: str) -> None:
        self._sent[kind] += 1

    def record(self, outcome: Outcome, at: float) -> None:
        if outcome.status is None:
            self._errors[outcome.error] += 1
        else:
            self._statuses[outcome.status] += 1
            self._recent.append((at, outcome.latency))
            self._run.add(outcome.latency)
            self._max = max(self._max, outcome.latency)
        self._fallbacks.update(outcome.fallbacks)
        if outcome.cache:
            self._cache[outcome.cache] += 1
        if outcome.model_version:
            self._versions[outcome.model_version] += 1
        second = self._second(int(at))
        second.answers += 1
        second.fallbacks.update(outcome.fallbacks)
        self._trim(at)

    def report(self, elapsed: float, *, in_flight: int = 0, burst: bool = False,
               outage: bool = False) -> TrafficReport:
        self._trim(elapsed)
        current = int(elapsed)
        complete = range(max(0, current - SPARK_SECONDS), current)
        per_second = tuple(self._seconds[i].answers if i in self._seconds else 0 for i in complete)
        rate_seconds = range(max(0, current - RATE_WINDOW), current)
        recent: Counter[str] = Counter()
        for i in rate_seconds:
            if i in self._seconds:
                recent.update(self._seconds[i].fallbacks)
        span = max(1, len(rate_seconds))
        return TrafficReport(
            url=self.url, elapsed=elapsed, target_rate=self.target_rate, sent=dict(self._sent),
            skipped=self.skipped, in_flight=in_flight, statuses=dict(self._statuses),
            errors=dict(self._errors), fallbacks=dict(self._fallbacks),
            fallback_rates={c: recent[c] / span for c in self._fallbacks},
            cache=dict(self._cache), model_versions=dict(self._versions),
            latency=_window_latency([lat for _, lat in self._recent]),
            run_latency=Latency(self._run.quantile(0.5), self._run.quantile(0.99), self._max),
            per_second=per_second, burst=burst, outage=outage)

    def _second(self, index: int) -> _Second:
        second = self._seconds.get(index)
        if second is None:
            second = self._seconds[index] = _Second()
            for old in [i for i in self._seconds if i < index - _KEEP_SECONDS]:
                del self._seconds[old]
        return second

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - LATENCY_WINDOW:
            self._recent.popleft()


def _window_latency(latencies: list[float]) -> Latency:
    if not latencies:
        return Latency()
    ordered = sorted(latencies)

    def rank(q: float) -> float:  # nearest rank: an observed value, never an interpolation
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return Latency(rank(0.5), rank(0.99), ordered[-1])
