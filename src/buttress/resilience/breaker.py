"""Circuit breaker: stop calling a dependency that keeps failing, probe it now and then.

States: *closed* (calls pass; outcomes are counted), *open* (calls are refused for
``open_for`` seconds), *half-open* (up to ``half_open_probes`` trial calls pass; one success
closes the breaker, one failure opens it again).

It trips on a failure *rate* of at least ``failure_rate`` over the last ``window`` outcomes
once ``min_calls`` have been seen (resilience4j's model, the default for stages: a burst of
slow calls under load does not cut a dependency off for every client), or, when set, on
``consecutive_failures`` in a row (what a backend connection wants: a dead Redis fails every
call, and the sooner its breaker opens the less each request pays).

Time comes from an injected clock, so tests drive the state machine without sleeping. The
breaker is not thread-safe: it lives on one event loop, like the stage that owns it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from buttress.resilience.durations import Duration, seconds


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Breaker:
    """Breaker settings: a small immutable policy, validated when declared."""

    consecutive_failures: int | None = None
    failure_rate: float = 0.5
    window: int = 100
    min_calls: int = 20
    open_for: Duration = "5s"
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        if self.consecutive_failures is not None and self.consecutive_failures < 1:
            raise ValueError("Breaker.consecutive_failures must be at least 1")
        if not 0.0 < self.failure_rate <= 1.0:
            raise ValueError("Breaker.failure_rate must be in (0, 1]")
        if self.window < 1 or not 1 <= self.min_calls <= self.window:
            raise ValueError("Breaker needs window >= 1 and 1 <= min_calls <= window")
        if self.half_open_probes < 1:
            raise ValueError("Breaker.half_open_probes must be at least 1")
        seconds(self.open_for, name="Breaker.open_for")

    @classmethod
    def for_backend(cls) -> Breaker:
        """The default for a backend connection (Redis): 5 failures in a row, open 5 s."""
        return cls(consecutive_failures=5)

    def build(self, clock: Callable[[], float] = time.monotonic) -> CircuitBreaker:
        return CircuitBreaker(self, clock)


class CircuitBreaker:
    """The running state machine for one dependency."""

    def __init__(self, policy: Breaker, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._open_for = seconds(policy.open_for)
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._consecutive = 0
        self._outcomes: deque[bool] = deque(maxlen=policy.window)  # True = failure
        self._failures_in_window = 0
        self._probes_in_flight = 0
        self._period = 0
        self.on_change: Callable[[BreakerState], None] | None = None

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self._open_for:
            self._set(BreakerState.HALF_OPEN)
        return self._state

    @property
    def period(self) -> int:
        """Which stretch of one state the breaker is in: bumped at every change of state.

        Read it right after :meth:`allow` admitted a call and hand it back to
        :meth:`release_probe`, so a call admitted before the current half-open period cannot
        free a probe slot it never held."""
        return self._period

    def allow(self) -> bool:
        """May a call go through now? In half-open, each ``True`` reserves a probe slot."""
        if self._state is BreakerState.CLOSED:  # nearly every call: no clock, no property
            return True
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        probes_left = self._probes_in_flight < self.policy.half_open_probes
        if state is BreakerState.HALF_OPEN and probes_left:
            self._probes_in_flight += 1
            return True
        return False

    def record_success(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._reset()
            self._set(BreakerState.CLOSED)
            return
        self._consecutive = 0
        if self._failures_in_window or len(self._outcomes) != self._outcomes.maxlen:
            self._push(False)  # a full window of successes stays as it is: skip the work

    def record_failure(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._trip()
            return
        if self._state is BreakerState.OPEN:
            return
        self._consecutive += 1
        self._push(True)
        in_a_row = self.policy.consecutive_failures
        if (in_a_row is not None and self._consecutive >= in_a_row) or self._rate_exceeded():
            self._trip()

    def release_probe(self, admitted_in: int) -> None:
        """A call admitted in ``admitted_in`` (its :attr:`period`) ended without a verdict
        (e.g. cancelled): if it was a probe of the current half-open period, free its slot."""
        if (admitted_in == self._period and self._state is BreakerState.HALF_OPEN
                and self._probes_in_flight):
            self._probes_in_flight -= 1

    def _push(self, failed: bool) -> None:
        if len(self._outcomes) == self._outcomes.maxlen and self._outcomes[0]:
            self._failures_in_window -= 1
        self._outcomes.append(failed)
        self._failures_in_window += failed

    def _rate_exceeded(self) -> bool:
        seen = len(self._outcomes)
        return (
            seen >= self.policy.min_calls
            and self._failures_in_window / seen >= self.policy.failure_rate
        )

    def _trip(self) -> None:
        self._reset()
        self._opened_at = self._clock()
        self._set(BreakerState.OPEN)

    def _reset(self) -> None:
        self._consecutive = 0
        self._outcomes.clear()
        self._failures_in_window = 0
        self._probes_in_flight = 0

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            self._period += 1
            if self.on_change is not None:
                self.on_change(state)
