"""The dynamic batcher: many concurrent ``submit`` calls, one model run per batch.

Why hand-written: the batchers of MLServer and Ray Serve live inside their servers, and no
standalone asyncio library keeps the per-item cost inside our budget (≈ 25 µs for the whole
request, see docs/performance.md) while honouring rows-not-requests sizing, deadlines, a bounded
queue and per-item failure isolation.

``Batcher`` composes its parts, one job each, and decides what happens next (``_schedule``,
called after every submit, run and timer):

* ``queue``: admission (the bounded FIFO, shedding with ``QueueFull``) and batch forming;
* ``flush``: when the next batch goes (``max_wait`` from the oldest item, the wait for
  company, the adaptive wait), with one timer;
* ``run``: one batch at a time on the model, one callback answering all its callers, and
  the bisecting re-run that makes one failing item fail only itself;
* ``deadlines``: items past their deadline failed by the batcher, one timer per running batch;
* ``observer``: metric hooks (once per batch) and counters.

It runs with no long-lived task and nothing created per item except its future. A cancelled
caller fails only itself: its rows leave the queue at once (no run wasted), or, if its batch
is already running, its share of the result is dropped.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from buttress.batching.deadlines import DeadlineWatch
from buttress.batching.errors import BatcherClosed, ExpiredInQueue
from buttress.batching.flush import FlushTimer
from buttress.batching.observer import BatcherStats, BatchObserver, Counts, notify
from buttress.batching.policy import Batch
from buttress.batching.queue import Item, Queue
from buttress.batching.run import Run, Runs
from buttress.batching.runner import BatchCall, Rows


class Batcher:
    """Groups concurrent ``submit`` calls into model runs; see the module docstring.

    Lives on one event loop (bound lazily by the first ``submit``) and is not thread-safe.
    """

    def __init__(
        self,
        policy: Batch,
        run: BatchCall,
        *,
        observer: BatchObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self._observer = observer if observer is not None else BatchObserver()
        self._clock = clock
        self._max_size = policy.max_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._counts = Counts()
        self._queue = Queue(policy.max_queue, self._counts, self._observer)
        self._flush = FlushTimer(policy.max_wait_seconds, policy.adaptive, self._on_timer)
        self._runs = Runs(run, self._counts, self._finished)
        self._watch = DeadlineWatch(self._queue, self._counts, clock)
        self._closing = False
        self._drained: asyncio.Future[None] | None = None

    async def submit(self, rows: Rows, deadline: float | None = None) -> Rows:
        """Predict ``rows`` (2-D, one request's rows) within a batch; return their slice.

        Raises ``QueueFull`` at once when the queue is full, ``ExpiredInQueue`` when
        ``deadline`` passes before the batch forms, ``ExpiredInRun`` when it passes while
        the batch runs, and the model's own exception when the model fails on these rows.
        """
        size = rows.shape[0] if rows.ndim == 2 else 0
        if not size:
            raise ValueError("submit takes a 2-D array with at least one row")
        if self._closing:
            raise BatcherClosed("the batcher is closed")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        now = self._clock()
        flush = self._flush
        if deadline is None:
            deadline = flush_by = math.inf
        elif deadline <= now:
            self._counts.expired += 1
            raise ExpiredInQueue("the deadline passed before the rows were queued")
        else:
            flush_by = flush.flush_by(deadline, now)
        item = Item(rows, size, loop.create_future(), deadline, flush_by, now)
        queued = self._queue.put(item)  # or QueueFull
        if self._runs.current is None:
            flush.arrived(False, queued)
            self._schedule(now)
        else:  # the running batch's end schedules the next one
            flush.arrived(True, queued)
            if deadline < self._watch.at:
                self._watch.move(deadline, now)
        try:
            return await item.future
        except asyncio.CancelledError:
            self._abandon(item)
            raise

    async def aclose(self) -> None:
        """Take no new items; run everything queued and wait for it (fails nothing)."""
        self._closing = True
        if self._loop is None:
            return
        if self._drained is None:
            self._drained = self._loop.create_future()
        self._schedule(self._clock())
        await asyncio.shield(self._drained)

    def stats(self) -> BatcherStats:
        return self._counts.snapshot(self._queue.rows, self._runs.current is not None)

    # -- what happens next ------------------------------------------------------------------

    def _schedule(self, now: float) -> None:
        """Start a retry or a batch, or arm the flush timer; called after every event."""
        runs, flush = self._runs, self._flush
        if runs.current is not None or flush.delivering:
            return
        if runs.retries:  # the halves of a failed batch go before any new batch
            run = runs.retry(now)
            if run is not None:
                self._watch.start(run.items, now)
                return
        queue = self._queue
        if not queue.rows:
            flush.disarm()
            if self._drained is not None and not self._drained.done():
                self._drained.set_result(None)
            return
        if (
            self._closing
            or queue.rows >= self._max_size
            or flush.plan(queue.oldest(), queue.flush_by, now)
        ):
            self._start_batch(now)

    def _on_timer(self) -> None:
        now = self._clock()
        if self._runs.current is not None or self._flush.delivering or self._runs.retries:
            self._schedule(now)
        else:
            self._start_batch(now)

    def _start_batch(self, now: float) -> None:
        """Form a batch from the head of the queue and start it."""
        self._flush.disarm()
        items, rows, oldest = self._queue.take(self._max_size, now)
        if not items:  # only possible with the queue now empty: this cannot recurse deeper
            self._schedule(now)
            return
        counts = self._counts
        counts.batches += 1
        counts.rows += rows
        counts.items += len(items)
        counts.max_rows = max(counts.max_rows, rows)
        notify(self._observer.batch_formed, rows, len(items), now - oldest, self._queue.rows)
        self._runs.start(items, rows, None, now)
        self._watch.start(items, now)

    def _finished(self, run: Run, waiter: asyncio.Future[Rows]) -> None:
        """The model run completed (the one callback per run): answer, then schedule."""
        self._watch.stop()
        now = self._clock()
        elapsed = now - run.started
        self._flush.ran(elapsed)
        error = self._runs.settle(run, waiter)
        notify(self._observer.batch_ran, run.rows, len(run.items), elapsed, error)
        if run.budget is None:  # a fresh batch, not a retry of part of one
            notify(self._observer.batch_outcome, elapsed, error)
        # The callers just resolved run on the loop's next iteration (they respond). Only
        # after them is the loop free to take in requests again, so the wait for company
        # starts then: a callback queued behind theirs.
        self._flush.delivering = True
        assert self._loop is not None
        self._loop.call_soon(self._delivered)

    def _delivered(self) -> None:
        """The last batch's callers have run: start the wait for company, or flush."""
        now = self._clock()
        self._flush.delivered(now)
        self._schedule(now)

    # -- callers and lifecycle --------------------------------------------------------------

    def _abandon(self, item: Item) -> None:
        self._counts.cancelled += 1
        if item.queued:
            self._queue.remove(item)
            if not self._queue.rows and self._runs.current is None:
                self._schedule(self._clock())

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        runs = self._runs
        busy = runs.current is not None or self._queue.rows or runs.retries
        if self._loop is not None and busy:
            raise RuntimeError("this Batcher is busy on another event loop")
        self._loop = loop
        runs.current = None
        runs.bind(loop)
        self._flush.bind(loop)
        self._watch.bind(loop)
