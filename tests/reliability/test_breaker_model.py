"""The circuit breaker against a reference model, on a fake clock, over generated histories.

``BreakerModel`` below is written from the breaker's documented rules (the docstring of
``buttress.resilience.breaker``), not from its code: *closed* counts outcomes and trips on
``consecutive_failures`` in a row or on a failure rate of at least ``failure_rate`` over the
last ``window`` outcomes once ``min_calls`` were seen; *open* refuses every call for
``open_for`` seconds; *half-open* lets ``half_open_probes`` calls through, the first success
closes and the first failure opens again. Hypothesis drives both with the same calls (start a
call, end it with a success, a failure or no verdict, move the clock) and compares the state
and every ``allow()`` answer at each step.

The calls are modelled as the stages make them: a call is admitted by ``allow()`` and later
ends, possibly after the breaker moved on. ``release_probe`` is called for every call ending
with no verdict, with the breaker's ``period`` read when the call was admitted; only a probe of
the current half-open period frees a slot (``test_a_stale_release_frees_no_probe_slot``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from buttress.resilience.breaker import Breaker, BreakerState, CircuitBreaker
from tests.support import FakeClock

EXAMPLES = 100
STEPS = 120
"""100 histories of up to 120 steps: at least 10,000 steps in all (asserted below)."""


@dataclass
class BreakerModel:
    """The documented behaviour, with the plainest possible bookkeeping."""

    policy: Breaker
    open_for: float
    state: BreakerState = BreakerState.CLOSED
    opened_at: float = 0.0
    outcomes: list[bool] = field(default_factory=list)  # True = failure, newest last
    probes: int = 0
    epoch: int = 0  # bumped on every change of state: which half-open period a probe is of

    def observe(self, now: float) -> BreakerState:
        if self.state is BreakerState.OPEN and now - self.opened_at >= self.open_for:
            self._move(BreakerState.HALF_OPEN)
        return self.state

    def allow(self, now: float) -> bool:
        state = self.observe(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and self.probes < self.policy.half_open_probes:
            self.probes += 1
            return True
        return False

    def record(self, failed: bool, now: float) -> None:
        # what a call reports is judged in the state the breaker was last seen in: a call's
        # end does not itself look at the clock (it is no probe of a breaker that opened
        # after it started)
        if self.state is BreakerState.HALF_OPEN:
            self._move(BreakerState.OPEN if failed else BreakerState.CLOSED, now)
            return
        if self.state is BreakerState.OPEN:
            return  # outcomes of calls admitted before it opened do not count
        self.outcomes = [*self.outcomes, failed][-self.policy.window:]
        in_a_row = 0
        for outcome in reversed(self.outcomes):
            if not outcome:
                break
            in_a_row += 1
        limit = self.policy.consecutive_failures
        seen = len(self.outcomes)
        rate = sum(self.outcomes) / seen
        if failed and ((limit is not None and in_a_row >= limit) or (
                seen >= self.policy.min_calls and rate >= self.policy.failure_rate)):
            self._move(BreakerState.OPEN, now)

    def release(self) -> None:
        self.probes -= 1

    def _move(self, state: BreakerState, now: float | None = None) -> None:
        if state is BreakerState.OPEN:
            assert now is not None
            self.opened_at = now
        self.outcomes = []  # each state starts counting afresh
        self.probes = 0
        self.state = state
        self.epoch += 1


@dataclass(frozen=True)
class Call:
    """An admitted call: whether it is a probe, and of which half-open period; and the
    breaker's :attr:`~CircuitBreaker.period` it was admitted in (what the stages hand back)."""

    probe_of: int | None
    period: int


policies = st.integers(1, 12).flatmap(lambda window: st.builds(
    Breaker,
    consecutive_failures=st.none() | st.integers(1, 6),
    failure_rate=st.sampled_from([0.2, 0.5, 0.75, 1.0]),
    window=st.just(window),
    min_calls=st.integers(1, window),
    open_for=st.sampled_from([0.5, 1.0, 5.0]),
    half_open_probes=st.integers(1, 3),
))

STEPS_TAKEN: list[int] = []


class BreakerComparison(RuleBasedStateMachine):
    calls = Bundle("calls")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.breaker: CircuitBreaker | None = None
        self.model: BreakerModel | None = None
        self.changes: list[BreakerState] = []
        STEPS_TAKEN.append(0)

    @initialize(policy=policies)
    def build(self, policy: Breaker) -> None:
        self.breaker = policy.build(self.clock)
        self.breaker.on_change = self.changes.append
        self.model = BreakerModel(policy, float(policy.open_for))  # type: ignore[arg-type]

    def _step(self) -> tuple[CircuitBreaker, BreakerModel]:
        STEPS_TAKEN[-1] += 1
        assert self.breaker is not None
        assert self.model is not None
        return self.breaker, self.model

    @rule(target=calls)
    def start_call(self) -> Call | None:
        breaker, model = self._step()
        half_open = model.observe(self.clock()) is BreakerState.HALF_OPEN
        expected = model.allow(self.clock())
        assert breaker.allow() is expected
        if not expected:
            return None
        return Call(model.epoch if half_open else None, breaker.period)

    @rule(call=consumes(calls), failed=st.booleans())
    def end_call(self, call: Call | None, failed: bool) -> None:
        breaker, model = self._step()
        if call is None:  # refused: it never ran
            return
        model.record(failed, self.clock())
        if failed:
            breaker.record_failure()
        else:
            breaker.record_success()

    @rule(call=consumes(calls))
    def end_call_without_verdict(self, call: Call | None) -> None:
        """Cancelled, or the caller's own deadline: no verdict on the dependency."""
        breaker, model = self._step()
        if call is None:
            return
        if call.probe_of == model.epoch and model.state is BreakerState.HALF_OPEN:
            model.release()
        breaker.release_probe(call.period)  # for every call, as the stages do

    @rule(seconds=st.sampled_from([0.0, 0.01, 0.25, 0.5, 1.0, 2.5, 5.0, 60.0]))
    def advance(self, seconds: float) -> None:
        self._step()
        self.clock.advance(seconds)

    @invariant()
    def same_state(self) -> None:
        if self.breaker is None or self.model is None:
            return
        assert self.breaker.state is self.model.observe(self.clock())
        if self.changes:  # on_change reported the last move (metrics mirror it)
            assert self.changes[-1] is self.breaker.state


BreakerComparison.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestBreakerAgainstItsModel = BreakerComparison.TestCase


def test_the_comparison_took_at_least_10000_steps() -> None:
    """Runs after the state machine in this module (pytest keeps file order)."""
    if not STEPS_TAKEN:
        pytest.skip("run together with TestBreakerAgainstItsModel")
    assert sum(STEPS_TAKEN) >= 10_000, f"{sum(STEPS_TAKEN)} steps in {len(STEPS_TAKEN)} runs"


def test_a_stale_release_frees_no_probe_slot() -> None:
    """A call admitted while closed ends with no verdict during the next half-open period:
    the stages release for every such call, and only a probe of the current period may free
    a slot."""
    clock = FakeClock()
    breaker = Breaker(consecutive_failures=1, open_for="1s", half_open_probes=1).build(clock)
    assert breaker.allow()  # a call admitted while closed, still running
    admitted_in = breaker.period
    assert breaker.allow()
    breaker.record_failure()  # another call fails: open
    clock.advance(1.0)
    assert breaker.allow()  # the one probe of this half-open period
    breaker.release_probe(admitted_in)  # the first call, cancelled now
    assert not breaker.allow(), "a second probe was let through"
