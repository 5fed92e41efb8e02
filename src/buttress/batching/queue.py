"""Admission: the bounded FIFO of items waiting for a batch, and how a batch leaves it.

Why its own module: what may wait, and in which order, is one rule that every other part
reads (when to flush, which deadlines to watch, what a cancelled caller gives back).

* The queue counts rows, not requests. At most ``Batch.max_queue`` rows wait: ``put``
  sheds an item that would exceed it with ``QueueFull`` at once rather than letting latency
  grow (an empty queue takes any item, however big).
* A batch takes items in arrival order while they fit in ``max_size`` rows. An item bigger
  than ``max_size`` runs alone as its own batch, whole: splitting it would only add runs, as a
  model call's cost barely grows with rows.
* An item is never searched for: a cancelled caller's item is only marked (``queued`` turns
  false, its rows given back at once) and skipped when it reaches the head.
* ``flush_by`` keeps the earliest time a queued deadline needs its batch to go. It may be
  early (after items left), never late; it is recomputed only when a batch is taken.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

from buttress.batching.deadlines import expire
from buttress.batching.errors import QueueFull
from buttress.batching.observer import BatchObserver, Counts, notify
from buttress.batching.runner import Rows


class Item:
    """One ``submit``: its rows, its caller's future and its deadline."""

    __slots__ = ("deadline", "enqueued", "flush_by", "future", "queued", "rows", "size")

    def __init__(
        self,
        rows: Rows,
        size: int,
        future: asyncio.Future[Rows],
        deadline: float,
        flush_by: float,
        now: float,
    ) -> None:
        self.rows = rows
        self.size = size
        self.future = future
        self.deadline = deadline
        self.flush_by = flush_by  # the latest flush that leaves this item time to run
        self.enqueued = now
        self.queued = True  # still in the queue, its rows counted in ``Queue.rows``


class Queue:
    """Items waiting for a batch, bounded in rows."""

    __slots__ = ("_counts", "_items", "_max_rows", "_observer", "flush_by", "rows")

    def __init__(self, max_rows: int, counts: Counts, observer: BatchObserver) -> None:
        self._items: deque[Item] = deque()
        self._max_rows = max_rows
        self._counts = counts
        self._observer = observer
        self.rows = 0  # rows of the items still queued
        self.flush_by = math.inf  # earliest item.flush_by in the queue (may be early, never late)

    def put(self, item: Item) -> int:
        """Queue ``item``, or shed it with ``QueueFull`` if its rows would exceed the bound;
        return the rows that were queued ahead of it."""
        queued = self.rows
        if queued and queued + item.size > self._max_rows:
            self._counts.shed += 1
            notify(self._observer.rejected, item.size, queued)
            raise QueueFull(f"{queued} rows queued; max_queue is {self._max_rows}")
        self._items.append(item)
        self.rows = queued + item.size
        if item.flush_by < self.flush_by:
            self.flush_by = item.flush_by
        return queued

    def oldest(self) -> float:
        """When the head item was queued (a cancelled head makes this early, never late)."""
        return self._items[0].enqueued

    def remove(self, item: Item) -> None:
        """A queued caller gave up: give its rows back now, skip its item at the head later."""
        item.queued = False
        self.rows -= item.size

    def take(self, limit: int, now: float) -> tuple[list[Item], int, float]:
        """Take a batch of at most ``limit`` rows from the head (an oversized head alone).

        Items whose deadline has passed are failed (``ExpiredInQueue``) and skipped. Returns
        the items, their rows and when the oldest of them was queued (``now`` if none).
        """
        pending, counts = self._items, self._counts
        items: list[Item] = []
        rows = 0
        oldest = now
        while pending:
            item = pending[0]
            if not item.queued:  # its caller was cancelled and already gave its rows back
                pending.popleft()
                continue
            if rows and rows + item.size > limit:
                break
            pending.popleft()
            item.queued = False
            self.rows -= item.size
            if item.future.done() or expire(item, now, counts):
                continue
            if not items:
                oldest = item.enqueued
            items.append(item)
            rows += item.size
            if rows >= limit:
                break
        if not pending:
            self.flush_by = math.inf
        elif self.flush_by != math.inf:
            self.flush_by = min((i.flush_by for i in pending if i.queued), default=math.inf)
        return items, rows, oldest

    def expire_due(self, now: float, earliest: float) -> float:
        """Fail the queued items past their deadline; return the earliest deadline left
        (or ``earliest`` if that comes first)."""
        counts = self._counts
        for item in self._items:
            # A caller cancelled this iteration has a done future but is still queued: it
            # gives its rows back when it resumes (``remove``); failing it here would raise.
            if not item.queued or item.future.done():
                continue
            if item.deadline <= now:
                self.remove(item)
                expire(item, now, counts)
            elif item.deadline < earliest:
                earliest = item.deadline
        return earliest
