"""The circuit breaker's state machine, driven by a fake clock (no sleeping)."""

from __future__ import annotations

import pytest

from buttress.resilience.breaker import Breaker, BreakerState, CircuitBreaker
from tests.support import FakeClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def build(clock: FakeClock, **policy: object) -> CircuitBreaker:
    # Unless a test says otherwise, only one rule is live at a time.
    defaults: dict[str, object] = {"consecutive_failures": 1000, "failure_rate": 1.0,
                                   "window": 1000, "min_calls": 1000, "open_for": "2s"}
    return Breaker(**{**defaults, **policy}).build(clock)  # type: ignore[arg-type]


def outcomes(breaker: CircuitBreaker, pattern: str) -> None:
    """Record calls: F = failure, S = success (each call asks ``allow`` first, as a stage does)."""
    for outcome in pattern:
        assert breaker.allow()
        if outcome == "F":
            breaker.record_failure()
        else:
            breaker.record_success()


def trip(breaker: CircuitBreaker) -> None:
    while breaker.state is CLOSED:
        outcomes(breaker, "F")


def test_consecutive_failures_trip_it(clock: FakeClock) -> None:
    breaker = build(clock, consecutive_failures=3)
    outcomes(breaker, "FF")
    assert breaker.state is CLOSED
    outcomes(breaker, "S")  # a success resets the run
    outcomes(breaker, "FF")
    assert breaker.state is CLOSED
    outcomes(breaker, "F")
    assert breaker.state is OPEN
    assert not breaker.allow()


def test_failure_rate_trips_only_after_min_calls(clock: FakeClock) -> None:
    breaker = build(clock, failure_rate=0.5, window=10, min_calls=4)
    outcomes(breaker, "FFF")  # 100 % failures, but only 3 calls seen
    assert breaker.state is CLOSED
    outcomes(breaker, "F")
    assert breaker.state is OPEN


def test_failure_rate_below_threshold_stays_closed(clock: FakeClock) -> None:
    breaker = build(clock, failure_rate=0.5, window=10, min_calls=4)
    outcomes(breaker, "SFSSFSSF")  # 3 of 8 failed (at most 2 of 5 before)
    assert breaker.state is CLOSED
    outcomes(breaker, "F")  # 4 of 9: still below one half
    assert breaker.state is CLOSED
    outcomes(breaker, "F")  # 5 of 10
    assert breaker.state is OPEN


def test_failure_rate_counts_only_the_window(clock: FakeClock) -> None:
    breaker = build(clock, failure_rate=0.75, window=4, min_calls=4)
    outcomes(breaker, "FFS")
    outcomes(breaker, "SSS")  # the two failures slid out of the window
    outcomes(breaker, "FF")  # window S S F F: one half, under 0.75
    assert breaker.state is CLOSED
    outcomes(breaker, "F")  # window S F F F
    assert breaker.state is OPEN


def test_open_interval_then_half_open(clock: FakeClock) -> None:
    breaker = build(clock, consecutive_failures=1, open_for="2s")
    trip(breaker)
    clock.advance(1.999)
    assert breaker.state is OPEN
    assert not breaker.allow()
    clock.advance(0.001)
    assert breaker.state is HALF_OPEN


def test_half_open_probe_success_closes(clock: FakeClock) -> None:
    breaker = build(clock, consecutive_failures=2, open_for=1)
    trip(breaker)
    clock.advance(1)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CLOSED
    # closed again with a clean slate: one failure does not re-trip a 2-failure breaker
    outcomes(breaker, "F")
    assert breaker.state is CLOSED


def test_half_open_probe_failure_reopens_for_another_interval(clock: FakeClock) -> None:
    breaker = build(clock, consecutive_failures=1, open_for=1)
    trip(breaker)
    clock.advance(5)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is OPEN
    clock.advance(0.5)
    assert not breaker.allow()  # the interval restarted at the probe's failure
    clock.advance(0.5)
    assert breaker.allow()


def test_half_open_admits_only_its_probe_slots(clock: FakeClock) -> None:
    breaker = build(clock, consecutive_failures=1, open_for=1, half_open_probes=2)
    trip(breaker)
    clock.advance(1)
    assert [breaker.allow() for _ in range(3)] == [True, True, False]
    breaker.release_probe(breaker.period)  # a probe was cancelled: its slot is free again
    assert breaker.allow()
    assert not breaker.allow()


def test_failure_reported_while_open_is_ignored(clock: FakeClock) -> None:
    breaker = build(clock, consecutive_failures=1, open_for=1)
    trip(breaker)
    opened_at = clock.now
    clock.advance(0.9)
    breaker.record_failure()  # a slow call started before the trip
    clock.advance(0.1)
    assert clock.now - opened_at == pytest.approx(1.0)
    assert breaker.state is HALF_OPEN


def test_on_change_sees_every_transition(clock: FakeClock) -> None:
    breaker = build(clock, consecutive_failures=1, open_for=1)
    seen: list[BreakerState] = []
    breaker.on_change = seen.append
    trip(breaker)
    clock.advance(1)
    assert breaker.allow()
    breaker.record_failure()
    clock.advance(1)
    assert breaker.allow()
    breaker.record_success()
    assert seen == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]


@pytest.mark.parametrize("policy", [
    {"consecutive_failures": 0},
    {"failure_rate": 0.0},
    {"failure_rate": 1.5},
    {"window": 0},
    {"window": 5, "min_calls": 6},
    {"min_calls": 0},
    {"half_open_probes": 0},
    {"open_for": "soon"},
    {"open_for": -1},
])
def test_invalid_policies_are_refused_when_declared(policy: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        Breaker(**policy)  # type: ignore[arg-type]


def test_policy_is_immutable_with_a_readable_repr() -> None:
    policy = Breaker(consecutive_failures=3, open_for="500ms")
    assert "consecutive_failures=3" in repr(policy)
    assert "open_for='500ms'" in repr(policy)
    with pytest.raises(AttributeError):
        policy.window = 3  # type: ignore[misc]


def test_the_default_counts_a_rate_not_a_streak(clock: FakeClock) -> None:
    """A stage's default breaker: a burst of failures among plenty of successes (timeouts in
    a moment of overload) does not cut the dependency off; a sustained failure rate does."""
    breaker = Breaker().build(clock)
    outcomes(breaker, "S" * 60 + "F" * 15 + "S" * 25)  # 15 in a row, 15 % of the window
    assert breaker.state is CLOSED
    outcomes(breaker, "F" * 19)  # 34 of the last 100 failed
    assert breaker.state is CLOSED
    outcomes(breaker, "FS" * 8 + "F" * 8)  # 50 of the last 100
    assert breaker.state is OPEN


def test_the_default_waits_for_a_minimum_of_calls(clock: FakeClock) -> None:
    breaker = Breaker().build(clock)
    outcomes(breaker, "F" * 19)
    assert breaker.state is CLOSED  # 19 calls: too few to judge
    outcomes(breaker, "F")
    assert breaker.state is OPEN


def test_a_backend_breaker_trips_on_five_in_a_row(clock: FakeClock) -> None:
    breaker = Breaker.for_backend().build(clock)
    outcomes(breaker, "S" * 50 + "F" * 4)
    assert breaker.state is CLOSED
    outcomes(breaker, "F")
    assert breaker.state is OPEN
