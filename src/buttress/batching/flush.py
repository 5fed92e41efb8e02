"""Flush timing: when the next batch leaves the queue, with one timer for it.

Why its own module: this is the tuned part of the batcher (``bench/batching.py``, tables in
docs/performance.md), and the rules below only make sense together.

* A batch goes when the queue holds ``max_size`` rows (the batcher checks that), or when
  its oldest item has waited ``max_wait``, or earlier when a queued deadline needs it: an
  item's batch is flushed by the time half of what it had left at ``submit`` remains (at
  least run estimate + 1 ms before the deadline), so a late timer on a busy loop, or
  uvloop's millisecond timers, do not expire it.
* The wait for company starts when the model can take a batch and the loop can take
  requests again: items that queued behind a running batch get ``max_wait`` after its
  callers have been resumed (they run on the next loop iteration, answering their requests)
  to be joined by more, unless they already fill a batch or a deadline forces it. Flushing
  the moment the run ended let closed-loop clients settle into two halves that alternate,
  each a model call, and counting the iteration that answers a batch as waiting time left
  less of ``max_wait`` for new requests to arrive. ``bench/batching.py``, tabular model at 64
  connections: 32 rows a batch (flush at run end), 42-48 (wait from the run's end), ~60
  (wait from the answers); 0.73x -> 0.80x -> 0.93-0.94x the raw batcher.

Adaptive wait (``Batch.adaptive``): waiting only pays when other items will join. An EWMA
tracks how often an arriving item finds *company*: a batch running, or items queued and
waiting for a batch. When fewer than half of recent arrivals did, the batch goes on the next
loop iteration instead of waiting ``max_wait``: a lone request pays one loop iteration (a few
µs), not ``max_wait``, and items submitted in the same iteration still share a batch (they
are not counted as company, so a few clients in lock-step, all in one batch, do not wait
either). Company, not the arrival rate, is the signal because one closed-loop client can
send often yet never overlaps itself. Flushing whenever the model is idle (greedy batching)
was rejected: under load it yields many small batches, each a full model call (≈ 460 µs of
CPU for a HistGradientBoosting) taken from the core that serves requests.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

_CROWD_ALPHA = 0.2  # weight of the latest arrival in the "found company" average
_CROWD_LEVEL = 0.5  # wait for a batch to fill only when most recent arrivals found company
_RUN_ALPHA = 0.2  # weight of the latest run in the run-latency estimate
_DEADLINE_SLACK = 0.001  # keep at least run estimate + this before a deadline when flushing


class FlushTimer:
    """Decides when the next batch goes and arms the one timer that calls ``on_due``."""

    __slots__ = (
        "_adaptive", "_crowd", "_free_since", "_loop", "_max_wait", "_on_due", "_run_estimate",
        "_timer", "_timer_at", "delivering", "soon",
    )

    def __init__(self, max_wait: float, adaptive: bool, on_due: Callable[[], None]) -> None:
        self._max_wait = max_wait
        self._adaptive = adaptive
        self._on_due = on_due
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.Handle | None = None
        self._timer_at = math.inf
        self._crowd = 0.0
        self._run_estimate = 0.0
        self.soon = False  # the armed timer is an immediate (next-iteration) flush
        self._free_since = -math.inf  # when the last batch was answered: waits start here
        self.delivering = False  # a batch's callers are being resumed: no flush until they ran

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Move to ``loop``, forgetting any timer or delivery left on the previous one."""
        self._loop = loop
        self._timer = None
        self._timer_at = math.inf
        self.soon = False
        self.delivering = False

    def flush_by(self, deadline: float, now: float) -> float:
        """The latest flush that leaves an item due at ``deadline`` time to run."""
        return deadline - max(self._run_estimate + _DEADLINE_SLACK, (deadline - now) / 2)

    def arrived(self, running: bool, queued: int) -> None:
        """An item arrived with ``queued`` rows ahead of it: did it find company?"""
        company = running or (queued > 0 and not self.soon and not self.delivering)
        self._crowd += _CROWD_ALPHA * (company - self._crowd)

    def ran(self, seconds: float) -> None:
        """A model run took ``seconds``: update the run estimate that deadlines keep clear."""
        self._run_estimate += _RUN_ALPHA * (seconds - self._run_estimate)

    def delivered(self, now: float) -> None:
        """The last batch's callers have run: the wait for company starts ``now``."""
        self.delivering = False
        self._free_since = now

    def plan(self, oldest: float, flush_by: float, now: float) -> bool:
        """Arm the timer for a queue that is not full; True when its batch is due now.

        ``oldest`` is when the head item was queued, ``flush_by`` the earliest flush a queued
        deadline needs.
        """
        flush_at = min(max(oldest, self._free_since) + self._max_wait, flush_by)
        if flush_at <= now:
            return True
        if self._adaptive and self._crowd < _CROWD_LEVEL:
            flush_at = now  # too little company to wait for: flush on the next iteration
        self._arm(flush_at, now)
        return False

    def _arm(self, at: float, now: float) -> None:
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        loop = self._loop
        assert loop is not None
        self._timer_at = at
        self.soon = at <= now
        if at <= now:
            self._timer = loop.call_soon(self._fire)
        else:
            self._timer = loop.call_later(at - now, self._fire)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = math.inf
            self.soon = False

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        self.soon = False
        self._on_due()
