"""The event log cannot be written under steady load: its directory turns read-only, or its
disk fills up. Redis, the model and everything else stay healthy.

What the design says happens (README, "Visibility"; docs/observability.md): requests never
wait on the event log, so they are answered exactly as before, without a fallback; the events
that cannot be written are dropped and counted (``buttress_events_dropped_total``, category
``events_dropped``), never half-written; once the directory can be written again, the next
file the writer opens (it rotates every second here) takes the events again.

Each replica's event directory is a tmpfs of its own (tests/reliability/replicas.py), so the
test can fill it, and a read-only bind mount over it makes it unwritable (tests run as root,
for whom ``chmod`` changes nothing). Both need ``mount``: without it these tests skip.
"""

from __future__ import annotations

import pytest

from tests.reliability.faults import (
    DROPPED,
    NOISE,
    WARM,
    Outcome,
    check,
    hold,
    under_load,
)
from tests.reliability.figures import SHED, Fault
from tests.reliability.load import Answer
from tests.reliability.replicas import Replicas

FAULT = 3.0
AFTER = 4.0
ROTATION = 1.0  # BUTTRESS_EVENTS_ROTATE_INTERVAL of the replicas
FLUSH_PERIOD = 0.2  # the event writer's
RESUMED = ROTATION + FLUSH_PERIOD + 0.3
"""Seconds after the fault's end by which every event is written again: the writer's next
rotation opens a file, its next flush fills it."""
NONE = frozenset[str]()


def may_lack_event(answers: list[Answer], fault: Fault) -> frozenset[str]:
    """Requests whose event the fault may have cost: answered from just before it (their
    event still buffered) until the writer has a file again."""
    return frozenset(a.request_id for a in answers
                     if fault.start - FLUSH_PERIOD - 0.1 <= a.done < fault.end + RESUMED)


def check_events_fault(outcome: Outcome, replicas: Replicas) -> None:
    report = outcome.report
    # what was lost was counted, and nothing counted turned up: the count is the missing
    # request events, plus the exception events lost with them (at most one per failed
    # stage: two feature stages, a model)
    missing = [a for a in outcome.answers if not outcome.events.get(a.request_id)]
    assert missing, report  # the fault did cost events
    failed_stages = sum(len(set(a.fallbacks) - {"guardrail_exceeded", SHED})
                        for a in outcome.answers)
    dropped = outcome.counted[DROPPED]
    assert len(missing) <= dropped <= len(missing) + 2 * failed_stages, (
        report, len(missing), dropped)
    torn = replicas.torn_lines()
    assert torn == 0, report
    last = max(a.done for a in missing) - outcome.fault.end
    print(f"  {len(missing)} request events missing, {dropped:.0f} counted dropped, "
          f"{torn} torn lines; the last one lost {last:.1f} s after the fault's end")
    # answered as if nothing happened: no fallback caused, no request slower
    check(outcome, replicas, recovery_within=1.0)
    during = outcome.during()
    assert sum(1 for a in during if not a.healthy) <= NOISE * len(during), report


@pytest.fixture
def event_disks(replicas: Replicas) -> Replicas:
    if not replicas.events_on_tmpfs:
        pytest.skip("needs root to mount a tmpfs for the event directories")
    return replicas


async def test_the_event_directory_turns_read_only(event_disks: Replicas) -> None:
    replicas = event_disks
    try:
        outcome = await under_load(
            replicas, "events-read-only",
            lambda load: hold(load, lambda: replicas.event_dirs_read_only(True),
                              lambda: replicas.event_dirs_read_only(False), FAULT),
            duration=WARM + FAULT + AFTER, categories=NONE, no_event=may_lack_event)
    finally:
        replicas.event_dirs_read_only(False)
    check_events_fault(outcome, replicas)


async def test_the_event_disk_fills_up(event_disks: Replicas) -> None:
    replicas = event_disks
    try:
        outcome = await under_load(
            replicas, "events-disk-full",
            lambda load: hold(load, replicas.fill_event_disks, replicas.free_event_disks,
                              FAULT),
            duration=WARM + FAULT + AFTER, categories=NONE, no_event=may_lack_event)
    finally:
        replicas.free_event_disks()
    check_events_fault(outcome, replicas)
