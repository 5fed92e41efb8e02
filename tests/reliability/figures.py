"""What one fault under load cost, as figures: the same ones for every fault, so the table in
docs/reliability.md compares like with like.

Times are seconds since the load started; the fault is ``[start, end)``. An answer belongs
to the fault when it was sent during it or was still in flight when it began. Latency is
measured twice: by the client (what a caller waited, including the load generator's own
scheduling on a shared machine) and by the server (the event's ``latency_ms``: the time the
deadline governs).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tests.reliability.load import Answer

SHED = "overloaded"
"""Admission control's answer. On a shared 2-core machine a stalled process sheds a few
requests whatever the fault (and stage timeouts read as overload, by design, until the
breakers open): counted and bounded on its own, not taken for the fault's own fallback."""


@dataclass(frozen=True)
class Fault:
    start: float
    """When the break was done."""
    end: float
    """When the heal was done."""
    healing: float
    """When the heal began (a switch the replicas read may be seen from then on)."""

    def during(self, answer: Answer) -> bool:
        return answer.sent < self.end and answer.done >= self.start

    def after(self, answer: Answer) -> bool:
        return answer.sent >= self.end


@dataclass(frozen=True)
class Figures:
    requests: int
    lost: int
    """Requests with no HTTP answer at all (a replica killed with them in flight)."""
    server_errors: int
    p99_ms: float
    server_p99_ms: float
    client_lag_p99_ms: float
    """How late the load generator sent its requests: high when the machine starved it (its
    answers' client latency then includes that too)."""
    during: Mapping[str, int]
    """Answers with each fallback category among those of the fault."""
    answers_during: int
    elsewhere: Mapping[str, int]
    """Fallback categories of answers before and after the fault (healthy ones excluded)."""
    shed: int
    last_fault_fallback_s: float
    """From the fault's end to the last answer still carrying one of its categories."""
    recovery_s: float
    """From the fault's end until every half second after has < 10 % of answers with one of
    the fault's categories (or shed)."""
    healthy_after_recovery: float
    """Share of answers sent after the recovery that are healthy (shed ones count as not)."""
    events_missing: int
    events_duplicated: int

    def report(self) -> str:
        return "\n".join(f"  {name.replace('_', ' ')}: {value:.3f}" if isinstance(value, float)
                         else f"  {name.replace('_', ' ')}: {value}"
                         for name, value in vars(self).items())


def p99(values: Iterable[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def recovery(after: Sequence[Answer], end: float, categories: frozenset[str], *,
             step: float = 0.5, share: float = 0.1) -> float:
    """The end of the last ``step``-long slice (by time sent, from ``end``) in which at least
    ``share`` of the answers still carried one of the fault's ``categories`` or were shed: a
    breaker still open moves it, a stray stage timeout on a stalled machine does not."""
    slices: dict[int, list[bool]] = {}
    marks = categories | {SHED}
    for answer in after:
        slices.setdefault(int((answer.sent - end) / step), []).append(
            bool(marks.intersection(answer.fallbacks)))
    bad = [i for i, values in slices.items() if sum(values) >= share * len(values)]
    return end + step * (max(bad) + 1) if bad else end


def figures(answers: Sequence[Answer], fault: Fault, categories: frozenset[str],
            events: Mapping[str, list[float]], *, rate: float,
            no_event: frozenset[str] = frozenset()) -> Figures:
    """The figures of one run. ``categories``: the fallbacks the fault is expected to cause;
    ``events``: the latencies of the request events each request id has; ``no_event``: ids
    whose event may be missing (a replica killed before writing it)."""
    served = [a for a in answers if a.status]
    during = [a for a in served if fault.during(a)]
    after = [a for a in served if fault.after(a)]
    lingering = [a for a in after if categories.intersection(a.fallbacks)]
    recovered = recovery(after, fault.end, categories)
    later = [a for a in after if a.sent >= recovered]
    elsewhere = Counter(c for a in served if not fault.during(a) and not a.healthy
                        for c in a.fallbacks)
    missing = sum(1 for a in served if not events.get(a.request_id)
                  and a.request_id not in no_event)
    return Figures(
        requests=len(answers),
        lost=len(answers) - len(served),
        server_errors=sum(1 for a in served if a.status >= 500),
        p99_ms=p99(a.latency_ms for a in served),
        server_p99_ms=p99(ms for a in served for ms in events.get(a.request_id, [])[:1]),
        client_lag_p99_ms=p99(1000 * max(0.0, a.sent - a.n / rate) for a in answers),
        during=dict(Counter(c for a in during for c in a.fallbacks)),
        answers_during=len(during),
        elsewhere=dict(elsewhere),
        shed=sum(1 for a in served if SHED in a.fallbacks),
        last_fault_fallback_s=max((a.done for a in lingering), default=fault.end) - fault.end,
        recovery_s=recovered - fault.end,
        healthy_after_recovery=(sum(1 for a in later if a.healthy) / len(later)
                                if later else 0.0),
        events_missing=missing,
        events_duplicated=sum(1 for a in served if len(events.get(a.request_id, [])) > 1),
    )


def timeline(answers: Sequence[Answer], step: float = 0.5) -> str:
    """Answers per ``step`` seconds (by time sent): how many, the fallbacks, the p99 ms."""
    slices: dict[int, list[Answer]] = {}
    for answer in answers:
        slices.setdefault(int(answer.sent / step), []).append(answer)
    lines = []
    for index in sorted(slices):
        group = slices[index]
        fallbacks = Counter(c for a in group for c in a.fallbacks)
        lines.append(f"  {index * step:5.1f} s  {len(group):4d} answers  p99 "
                     f"{p99(a.latency_ms for a in group if a.status):6.1f} ms  "
                     f"{dict(fallbacks) or ''}")
    return "\n".join(lines)
