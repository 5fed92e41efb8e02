"""Admission control at the door: learn the concurrency at which latency stays healthy and
answer the excess at once, so that admitted requests keep their whole pipeline.

Without it, a server past its capacity degrades everyone: requests queue inside the event
loop, every stage's timeout fires, breakers open, and every answer is a fallback. A static
cap (BentoML's ``max_concurrency``, Ray Serve's ``max_ongoing_requests``) must be tuned per
model and machine; this limit finds it, in the manner of Netflix's concurrency-limits
(Gradient2) and Envoy's adaptive concurrency filter, with one difference: the latency it
holds is a *target* derived from the service's own timeouts, not the latency it saw when
idle. A batching server is slower per request at its healthy peak than when idle (batches
fill), so "stay near the idle latency" (Envoy's minRTT) would keep it far below capacity;
"stay well inside the stages' timeouts" is what healthy means to the service.

* every admitted request's time in the server is a sample; samples are averaged over a short
  window (``window``, at least ``min_samples``), and the limit moves once per window;
* while the average is under ``target`` and the traffic used at least half the limit, the
  limit grows by ``sqrt(limit)``;
* above it, the limit first comes down to the concurrency the window actually had (a limit
  above it was not what let the latency rise), then shrinks in proportion
  (``target / average``, by at most half per window), smoothed so that one slow window does
  not halve the capacity.

Hand-written (≈ 80 lines) because no maintained Python library implements it, and the hot
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
    """The mean time in the server the limit holds admitted requests to."""
    initial_limit: int = 1000
    """Start unlimited in effect: a burst on an idle server is served; the limit comes down
    only once latency shows the server is past its capacity."""
    min_limit: int = 4
    max_limit: int = 1000
    smoothing: float = 0.2
    window: Duration = "100ms"
    min_samples: int = 10

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

    def build(self, clock: Callable[[], float]) -> ConcurrencyLimit:
        return ConcurrencyLimit(self, clock)


class ConcurrencyLimit:
    """The running limit. ``limit`` is read on every request; ``sample`` is a few float
    operations, and the limit is recomputed once per window."""

    __slots__ = ("_clock", "_count", "_peak_in_flight", "_policy", "_sum", "_target",
                 "_window", "_window_ends", "estimate", "limit")

    def __init__(self, policy: Admission, clock: Callable[[], float]) -> None:
        self._policy = policy
        self._clock = clock
        self._target = seconds(policy.target)
        self._window = seconds(policy.window)
        self.estimate = float(policy.initial_limit)
        self.limit = policy.initial_limit
        """Requests that may be in flight at once; the one beyond it is answered at once."""
        self._sum = 0.0
        self._count = 0
        self._peak_in_flight = 0
        self._window_ends = clock() + self._window

    def sample(self, latency: float, in_flight: int) -> None:
        """An admitted request took ``latency`` seconds with ``in_flight`` requests in flight
        (itself included) when it arrived."""
        self._sum += latency
        self._count += 1
        if in_flight > self._peak_in_flight:
            self._peak_in_flight = in_flight
        if self._count >= self._policy.min_samples:
            now = self._clock()
            if now >= self._window_ends:
                self._update(self._sum / self._count)
                self._sum, self._count, self._peak_in_flight = 0.0, 0, 0
                self._window_ends = now + self._window

    def _update(self, mean: float) -> None:
        policy = self._policy
        if mean <= self._target:
            if self._peak_in_flight < self.estimate / 2:
                return  # the traffic did not test the limit: nothing learned
            target = self.estimate + math.sqrt(self.estimate)
        else:
            self.estimate = min(self.estimate, float(self._peak_in_flight))
            target = self.estimate * max(0.5, self._target / mean)
        estimate = self.estimate * (1 - policy.smoothing) + target * policy.smoothing
        self.estimate = max(float(policy.min_limit), min(float(policy.max_limit), estimate))
        self.limit = int(self.estimate)
