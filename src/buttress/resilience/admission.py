"""Admission control at the door: learn the concurrency at which admitted requests stay
healthy and answer the excess at once, so that admitted requests keep their whole pipeline.

Without it, a server far past its capacity degrades everyone: requests queue inside the
event loop until every stage's timeout fires, breakers open, and every answer is a fallback.
A static cap (BentoML's ``max_concurrency``, Ray Serve's ``max_ongoing_requests``) must be
tuned per model and machine; this limit finds it, in the manner of Netflix's
concurrency-limits and Envoy's adaptive concurrency filter, with two differences that the
measurements (docs/performance.md) forced:

* *Healthy* is what the service itself says it is, not "near the idle latency": admitted
  requests whose stages hit their own timeouts (``timed_out`` samples; a client's own short
  deadline does not count), or a mean time in the server above ``target`` (by default half
  the request deadline). A batching server is slower per request at its healthy peak than
  when idle, so Envoy's minRTT rule would keep it far below capacity.
* Shed requests cost CPU too (the HTTP exchange, validation, the fallback answer), and
  clients that retry at once send more of them the lower the limit goes. So the limit never
  drops below half the concurrency it last saw healthy (within ``memory``): without that
  floor it would spiral down to its minimum and serve nothing healthy.

Per window (``window``, at least ``min_samples`` admitted requests): healthy and the traffic
used at least half the limit -> it grows by ``sqrt(limit)``; unhealthy -> it comes down to
the concurrency the window actually had, then by the share of the excess (at most half per
window), smoothed so that one bad window does not halve the capacity.

Hand-written (≈ 100 lines) because no maintained Python library implements it, and the hot
path only reads one integer. Not thread-safe: it lives on one event loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from buttress.resilience.durations import Duration, seconds


@dataclass(frozen=True)
class Admission:
    """Adaptive admission policy: a small immutable object, validated when declared."""

    target: Duration
    """The mean time in the server above which admitted requests are not healthy."""
    initial_limit: int = 1000
    """Start unlimited in effect: a burst on an idle server is served; the limit comes down
    only once latency shows the server is past its capacity."""
    min_limit: int = 4
    max_limit: int = 1000
    smoothing: float = 0.2
    window: Duration = "100ms"
    min_samples: int = 10
    memory: Duration = "10s"
    """How long the concurrency last seen healthy bounds the limit from below."""
    max_timeout_rate: float = 0.01
    """The share of admitted requests whose own stage timeouts fired above which a window is
    not healthy."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_limit <= self.initial_limit <= self.max_limit:
            raise ValueError("Admission needs 1 <= min_limit <= initial_limit <= max_limit")
        if seconds(self.target, name="Admission.target") <= 0:
            raise ValueError("Admission.target must be positive")
        if not 0.0 < self.smoothing <= 1.0:
            raise ValueError("Admission.smoothing must be in (0, 1]")
        if seconds(self.window, name="Admission.window") <= 0:
            raise ValueError("Admission.window must be positive")
        if self.min_samples < 1:
            raise ValueError("Admission.min_samples must be at least 1")
        seconds(self.memory, name="Admission.memory")
        if not 0.0 <= self.max_timeout_rate < 1.0:
            raise ValueError("Admission.max_timeout_rate must be in [0, 1)")

    def build(self, clock: Callable[[], float]) -> ConcurrencyLimit:
        return ConcurrencyLimit(self, clock)


class ConcurrencyLimit:
    """The running limit. ``limit`` is read on every request; ``sample`` is a few float
    operations, and the limit is recomputed once per window."""

    __slots__ = ("_clock", "_count", "_healthy", "_healthy_until", "_memory", "_peak_in_flight",
                 "_policy", "_sum", "_target", "_timeouts", "_window", "_window_ends",
                 "estimate", "limit", "mean_latency")

    def __init__(self, policy: Admission, clock: Callable[[], float]) -> None:
        self._policy = policy
        self._clock = clock
        self._target = seconds(policy.target)
        self._window = seconds(policy.window)
        self._memory = seconds(policy.memory)
        self._healthy = 0.0
        """The highest concurrency of a recent window whose latency met the target."""
        self._healthy_until = 0.0
        self.estimate = float(policy.initial_limit)
        self.limit = policy.initial_limit
        """Requests that may be in flight at once; the one beyond it is answered at once."""
        self.mean_latency = 0.0
        """The mean time an admitted request spent in the server, over the last window."""
        self._sum = 0.0
        self._count = 0
        self._timeouts = 0
        self._peak_in_flight = 0
        self._window_ends = clock() + self._window

    def sample(self, latency: float, in_flight: int, timed_out: bool = False) -> None:
        """An admitted request took ``latency`` seconds with ``in_flight`` requests in flight
        (itself included) when it arrived; ``timed_out``: a stage's own timeout fired."""
        self._sum += latency
        self._count += 1
        self._timeouts += timed_out
        if in_flight > self._peak_in_flight:
            self._peak_in_flight = in_flight
        if self._count >= self._policy.min_samples:
            now = self._clock()
            if now >= self._window_ends:
                self.mean_latency = self._sum / self._count
                self._update(self.mean_latency, self._timeouts / self._count, now)
                self._sum, self._count, self._timeouts, self._peak_in_flight = 0.0, 0, 0, 0
                self._window_ends = now + self._window

    def _update(self, mean: float, timeout_rate: float, now: float) -> None:
        policy = self._policy
        peak = float(self._peak_in_flight)
        if mean <= self._target and timeout_rate <= policy.max_timeout_rate:
            if peak >= self._healthy or now > self._healthy_until:
                self._healthy = peak
            self._healthy_until = now + self._memory
            if peak < self.estimate / 2:
                return  # the traffic did not test the limit: nothing learned
            target = self.estimate + math.sqrt(self.estimate)
        else:
            floor = self._healthy / 2 if now <= self._healthy_until else 0.0
            self.estimate = max(min(self.estimate, peak), floor)
            share = max(0.5, min(0.9, self._target / mean, 1.0 - timeout_rate))
            target = max(self.estimate * share, floor)
        estimate = self.estimate * (1 - policy.smoothing) + target * policy.smoothing
        self.estimate = max(float(policy.min_limit), min(float(policy.max_limit), estimate))
        self.limit = int(self.estimate)
