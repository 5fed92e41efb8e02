"""Running aggregates per model version, for the rollback rules.

Each :class:`~buttress.pipeline.live.ModelSet` has one :class:`Tally` (when the service
declares rollback rules): a request adds to the tally of the versions that answered it, so
comparing two versions is comparing two tallies. The request path pays a few additions:

- :meth:`Tally.measure` where the response is built (the engine), for a clean answer the
  versions computed: one call of each response measure, one float addition each;
- :meth:`Tally.request` where the request's status and latency are known (the runtime):
  three counters and one latency bucket.

p99 latency comes from a fixed log-spaced histogram (a bisect and an increment), precise to
the bucket's width (~12 %), which is enough to tell a version twice as slow.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from buttress.registry.rollback_rule import Measure, RollbackRule

LATENCY_BOUNDS = tuple(0.0002 * 1.12 ** i for i in range(90))
"""Bucket upper bounds in seconds, 0.2 ms to ~5 min, each 12 % wider than the last."""


class Tally:
    __slots__ = ("errors", "failed_measures", "fallbacks", "latency", "measured",
                 "measures", "requests", "sums")

    def __init__(self, rules: tuple[RollbackRule, ...]) -> None:
        self.measures: tuple[Measure, ...] = tuple(dict.fromkeys(
            r.measure for r in rules if not isinstance(r.measure, str)))
        self.sums = [0.0] * len(self.measures)
        self.measured = 0
        """Clean answers measured (each response measure has one sum)."""
        self.failed_measures = 0
        """Answers a measure raised on (counted nowhere else: a bug in the rule, not the
        version)."""
        self.requests = 0
        self.fallbacks = 0
        self.errors = 0
        self.latency = [0] * (len(LATENCY_BOUNDS) + 1)

    def measure(self, request: Any, response: Any) -> None:
        sums = self.sums
        try:
            for index, measure in enumerate(self.measures):
                sums[index] += measure(request, response)
        except Exception:
            self.failed_measures += 1
            return
        self.measured += 1

    def request(self, status: int, fell_back: bool, seconds: float) -> None:
        self.requests += 1
        if fell_back:
            self.fallbacks += 1
        if status >= 500:
            self.errors += 1
        self.latency[bisect_left(LATENCY_BOUNDS, seconds)] += 1

    def value(self, rule: RollbackRule) -> tuple[float, int] | None:
        """The rule's value for this version and the requests it stands on; None before
        there is anything to judge."""
        measure = rule.measure
        if not isinstance(measure, str):
            index = self.measures.index(measure)
            if not self.measured:
                return None
            return self.sums[index] / self.measured, self.measured
        if not self.requests:
            return None
        if measure == "fallback_rate":
            return self.fallbacks / self.requests, self.requests
        if measure == "error_rate":
            return self.errors / self.requests, self.requests
        return self._quantile(0.99), self.requests

    def _quantile(self, q: float) -> float:
        wanted = q * self.requests
        seen = 0
        for index, count in enumerate(self.latency):
            seen += count
            if seen >= wanted:
                return LATENCY_BOUNDS[min(index, len(LATENCY_BOUNDS) - 1)]
        return LATENCY_BOUNDS[-1]

    def __repr__(self) -> str:
        return f"<Tally requests={self.requests} measured={self.measured}>"
