"""One replica is killed with SIGKILL under steady load and started again at once, as a
supervisor would; the other replica and Redis stay healthy.

What the design says happens: the killed replica's requests in flight are lost (no answer;
they are not sent again, since a guardrail may have counted them) and so are the events it
had not written yet (the writer flushes every 200 ms); every other request is answered. A
client (here the load generator, as a balancer would) sends a request whose connection is
refused to the other replica. The restarted replica listens only once it is ready, then
answers without fallbacks: its breakers are new and Redis still holds the features, caches
and guardrail counts.
"""

from __future__ import annotations

import asyncio

from tests.reliability.faults import NOISE, RATE, WARM, check, under_load
from tests.reliability.figures import Fault
from tests.reliability.load import Answer, Load
from tests.reliability.replicas import Replicas
from tests.servers import wait_ready

KILLED = 1
RESTART_WITHIN = 20.0
"""Seconds from SIGKILL until the new process is ready (it loads the service and warms the
model first; a few seconds on a quiet machine)."""
AFTER = 4.0
DURATION = WARM + RESTART_WITHIN + AFTER
FLUSH_PERIOD = 0.2
DEADLINE = 0.25
STARVED = 0.10
"""Answers with a fallback the survivor may give while the new process starts: both share
two cores, and the start (imports, warm-up) takes one for seconds, so a share of the
survivor's 30 ms feature look-ups time out (``features_unavailable``) and admission sheds a
few (``overloaded``); replicas on machines of their own would not see it."""


def unwritten(answers: list[Answer], fault: Fault) -> frozenset[str]:
    """Events the killed replica may have held in its buffer: of its answers in the last
    flush period (and a margin) before the kill."""
    return frozenset(a.request_id for a in answers if a.replica == KILLED
                     and fault.start - FLUSH_PERIOD - 0.3 <= a.done <= fault.start)


async def test_a_replica_killed_with_sigkill_and_restarted(replicas: Replicas) -> None:
    signalled: list[float] = []

    async def inject(load: Load) -> Fault:
        await asyncio.sleep(WARM)
        signalled.append(load.now())
        await asyncio.to_thread(replicas.kill, KILLED)  # until the process is gone
        start = load.now()
        await asyncio.to_thread(replicas.restart, KILLED)
        await asyncio.to_thread(wait_ready, replicas.servers[KILLED], RESTART_WITHIN)
        ready = load.now()
        load.finish_in(AFTER)
        return Fault(start, ready, ready)

    outcome = await under_load(replicas, "replica-killed", inject, duration=DURATION,
                               categories=frozenset(), metrics=False, no_event=unwritten)
    report, fault = outcome.report, outcome.fault
    # only requests in flight on the killed replica were lost: sent to it at most a deadline
    # before SIGKILL, or while its process was going (it accepts until it is gone)
    lost = [a for a in outcome.answers if not a.status]
    first = signalled[-1] - DEADLINE
    assert all(a.replica == KILLED and first <= a.sent <= fault.start for a in lost), (
        report, lost)
    in_flight = (fault.start - first) * RATE / 2 + 2  # its half of the load, in that time
    # the others were answered: by the survivor until the new process listened
    listening = min(a.sent for a in outcome.answers if a.replica == KILLED and a.status
                    and a.sent > fault.start)
    away = [a for a in outcome.answers if fault.start < a.sent < listening]
    assert all(a.status == 200 and a.replica != KILLED for a in away), report
    assert sum(a.retried for a in away) >= 0.4 * len(away), report
    back = [a for a in outcome.answers if a.sent >= listening and a.replica == KILLED]
    assert back, report
    unhealthy = [a for a in away if not a.healthy]
    cold = [a for a in back if not a.healthy]
    print(f"  listening again {listening - fault.start:.1f} s after the kill, ready "
          f"{fault.end - fault.start:.1f} s after; {sum(a.retried for a in away)} requests "
          f"sent to the survivor instead, {len(unhealthy)} of {len(away)} with a fallback; "
          f"{len(cold)} of the restarted replica's {len(back)} answers with a fallback; "
          f"{len(lost)} lost, the process gone {fault.start - signalled[-1]:.2f} s after "
          f"SIGKILL")
    check(outcome, replicas, recovery_within=1.0, lost=int(in_flight))
    assert len(unhealthy) <= STARVED * len(away), report
    assert {c for a in unhealthy for c in a.fallbacks} <= {"features_unavailable",
                                                          "overloaded", "model_timeout"}, report
    # back: the restarted replica answers, without fallbacks
    assert len(cold) <= NOISE * len(back), (report, cold)
