"""``bt.RollbackRule``: when a freshly promoted version rolls itself back.

    @svc.model(model=bt.FromRegistry("discount"), rollback=[
        bt.RollbackRule("mean_discount", measure=mean_pct, max_increase=0.25),
        bt.RollbackRule("fallbacks", measure="fallback_rate", max_rise=0.05),
    ])

A rule compares the new version's value with the value of the version it replaced, measured
by the same replica over the same kind of traffic. ``measure`` is either a function of
``(request, response)`` returning a number (averaged over the clean answers the version
computed: no fallback, not from the cache), or one of the service measures
``fallback_rate`` (share of requests with any fallback), ``error_rate`` (share answered 5xx)
and ``p99_latency`` (seconds). The rule fires when the new value exceeds the previous one by
more than ``max_increase`` (relative: 0.25 is 25 % more) or ``max_rise`` (absolute, in the
measure's unit), once both versions have ``min_requests`` counted, and only within
``watch_for`` after the promotion.

A small immutable declaration, validated when written; the runtime does the counting
(``buttress.pipeline.tally``) and the watching (``buttress.pipeline.follow``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from buttress.registry.records import check_name
from buttress.resilience.durations import Duration, seconds

SERVICE_MEASURES = ("fallback_rate", "error_rate", "p99_latency")
"""Measures the runtime keeps itself, per version."""

Measure = Callable[[Any, Any], float]


@dataclass(frozen=True)
class RollbackRule:
    name: str
    measure: Measure | str
    max_increase: float | None = None
    """Fire when new > previous x (1 + max_increase)."""
    max_rise: float | None = None
    """Fire when new > previous + max_rise."""
    min_requests: int = 200
    """Requests each version needs counted before the rule may judge (per replica)."""
    watch_for: Duration = field(default="5min")
    """How long after the promotion the rule watches; stored in seconds."""

    def __post_init__(self) -> None:
        check_name("rollback rule name", self.name)
        if isinstance(self.measure, str):
            if self.measure not in SERVICE_MEASURES:
                raise ValueError(f"rollback rule {self.name!r}: measure {self.measure!r} must "
                                 f"be a function (request, response) -> number or one of "
                                 f"{', '.join(SERVICE_MEASURES)}")
        elif not callable(self.measure):
            raise TypeError(f"rollback rule {self.name!r}: measure must be callable or a name")
        if self.max_increase is None and self.max_rise is None:
            raise ValueError(f"rollback rule {self.name!r}: give max_increase (relative) "
                             "and/or max_rise (absolute)")
        for bound in ("max_increase", "max_rise"):
            value = getattr(self, bound)
            if value is not None and (isinstance(value, bool) or not value >= 0):
                raise ValueError(f"rollback rule {self.name!r}: {bound} must be a number >= 0")
        if isinstance(self.min_requests, bool) or not (
                isinstance(self.min_requests, int) and self.min_requests >= 1):
            raise ValueError(f"rollback rule {self.name!r}: min_requests must be an int >= 1")
        watch = seconds(self.watch_for, name=f"rollback rule {self.name!r} watch_for")
        if watch <= 0:
            raise ValueError(f"rollback rule {self.name!r}: watch_for must be positive")
        object.__setattr__(self, "watch_for", watch)

    @property
    def measures_responses(self) -> bool:
        """A function of (request, response), not a service measure."""
        return not isinstance(self.measure, str)

    @property
    def watch_seconds(self) -> float:
        return float(self.watch_for)

    @property
    def measure_name(self) -> str:
        if isinstance(self.measure, str):
            return self.measure
        return getattr(self.measure, "__name__", "measure")

    def breached(self, new: float, previous: float) -> bool:
        """Whether ``new`` is worse than ``previous`` by more than the rule allows."""
        if self.max_increase is not None and new > previous * (1 + self.max_increase):
            return True
        return self.max_rise is not None and new > previous + self.max_rise

    def describe(self, new: float, previous: float) -> str:
        """One line for the audit history: what was measured and which bound it crossed."""
        bounds = []
        if self.max_increase is not None:
            bounds.append(f"+{self.max_increase:.0%}")
        if self.max_rise is not None:
            bounds.append(f"+{self.max_rise:g}")
        return (f"rule {self.name}: {self.measure_name} {new:.4g} vs {previous:.4g} before "
                f"(allowed {' or '.join(bounds)})")

    def __repr__(self) -> str:
        shown = [repr(self.name), f"measure={self.measure_name!r}" if isinstance(
            self.measure, str) else f"measure=<{self.measure_name}>"]
        if self.max_increase is not None:
            shown.append(f"max_increase={self.max_increase:g}")
        if self.max_rise is not None:
            shown.append(f"max_rise={self.max_rise:g}")
        shown.append(f"min_requests={self.min_requests}")
        shown.append(f"watch_for={self.watch_for:g}s")
        return f"RollbackRule({', '.join(shown)})"
