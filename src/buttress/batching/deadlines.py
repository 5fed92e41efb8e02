"""Deadlines: an item whose deadline passes is failed by the batcher, never left to wait.

Why its own module: a caller needs no timeout of its own around ``submit`` (a
``wait_for`` per request costs ≈ 5 µs, docs/performance.md), so the batcher alone enforces
deadlines (absolute ``clock()`` values, ``time.monotonic`` by default), in three places:

* at ``submit``: a deadline already past is refused with ``ExpiredInQueue``;
* when a batch forms (or a failed batch's half is re-run): an item past its deadline is
  failed with ``ExpiredInQueue`` and never reaches the model (``expire``);
* while a batch runs, one timer per run rather than one per item (``DeadlineWatch``) waits
  for the earliest deadline among the items running and queued. When it fires, the items
  past their deadline fail at once (``ExpiredInRun`` if their batch is running,
  ``ExpiredInQueue`` if queued behind it) and the timer moves to the next deadline. So a
  slow model run cannot hold a caller past its deadline; its batch-mates with time left
  still get their rows when the run completes.

When a batch must be flushed for its deadlines to be met is flush timing (``flush.py``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from buttress.batching.errors import ExpiredInQueue, ExpiredInRun
from buttress.batching.observer import Counts

if TYPE_CHECKING:
    from buttress.batching.queue import Item, Queue


def expire(item: Item, now: float, counts: Counts) -> bool:
    """Fail ``item`` with ``ExpiredInQueue`` if its deadline has passed; say whether it did."""
    if item.deadline > now:
        return False
    counts.expired += 1
    item.future.set_exception(ExpiredInQueue("the deadline passed while the rows were queued"))
    return True


class DeadlineWatch:
    """The one deadline timer of the running batch, covering the queue behind it too."""

    __slots__ = ("_clock", "_counts", "_items", "_loop", "_queue", "_timer", "at")

    def __init__(self, queue: Queue, counts: Counts, clock: Callable[[], float]) -> None:
        self._queue = queue
        self._counts = counts
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._items: list[Item] | None = None  # the running batch's items, while it runs
        self._timer: asyncio.TimerHandle | None = None
        self.at = math.inf  # when the timer fires (inf: no timer)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def start(self, items: list[Item], now: float) -> None:
        """A batch of ``items`` started: watch the earliest deadline, its own or queued."""
        self._items = items
        earliest = min(item.deadline for item in items)
        queue = self._queue
        if queue.rows and queue.flush_by < earliest:  # may be early, never late
            earliest = queue.flush_by
        self.move(earliest, now)

    def move(self, at: float, now: float) -> None:
        """(Re-)arm the timer for ``at`` (inf: none)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.at = at
        if at != math.inf:
            assert self._loop is not None
            self._timer = self._loop.call_later(max(0.0, at - now), self._fire)

    def stop(self) -> None:
        """The batch finished: no more watching until the next one starts."""
        self._items = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.at = math.inf

    def _fire(self) -> None:
        """Fail the items whose deadline passed while a batch ran; watch the next one."""
        self._timer = None
        items = self._items
        if items is None:
            self.at = math.inf
            return
        now = self._clock()
        earliest = math.inf
        for item in items:
            if item.future.done():
                continue
            if item.deadline <= now:
                self._counts.expired += 1
                item.future.set_exception(ExpiredInRun(
                    "the deadline passed while the batch was running"))
            elif item.deadline < earliest:
                earliest = item.deadline
        self.move(self._queue.expire_due(now, earliest), now)
