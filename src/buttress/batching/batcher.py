"""The dynamic batcher: many concurrent ``submit`` calls, one model run per batch.

Why hand-written: the batchers of MLServer and Ray Serve live inside their servers, and no
standalone asyncio library keeps the per-item cost inside our budget (≈ 25 µs for the whole
request, see PERFORMANCE.md) while honouring rows-not-requests sizing, deadlines, a bounded
queue and per-item failure isolation.

How it runs, with no long-lived task and nothing created per item except its future:

* ``submit`` appends the item to a FIFO queue and decides, in a few comparisons, whether to
  flush now (the queue holds ``max_size`` rows), arm one ``call_later`` timer (the oldest item's
  ``max_wait``, or earlier if a queued deadline comes first), or leave it to the running batch.
* One batch runs at a time. Its completion callback resolves every caller's future (one
  callback per batch). The wait for company starts when the model can take a batch and the
  loop can take requests again: items that queued behind a running batch get ``max_wait``
  after its callers have been resumed (they run on the next loop iteration, answering their
  requests) to be joined by more, unless they already fill a batch or a deadline forces it.
  Flushing the moment the run ended let closed-loop clients settle into two halves that
  alternate, each a model call, and counting the iteration that answers a batch as waiting
  time left less of ``max_wait`` for new requests to arrive. ``bench/batching.py``, tabular
  model at 64 connections: 32 rows a batch (flush at run end), 42-48 (wait from the run's
  end), ~60 (wait from the answers); 0.73x -> 0.80x -> 0.93-0.94x the raw batcher
  (docs/performance.md).
* A batch takes items in arrival order while they fit in ``max_size`` rows. An item bigger
  than ``max_size`` runs alone as its own batch, whole: splitting it would only add runs, as a
  model call's cost barely grows with rows.
* Deadlines (absolute ``clock()`` values, ``time.monotonic`` by default) bound the wait: an
  item's batch is flushed by the time half of what it had left at ``submit`` remains (at
  least run estimate + 1 ms before the deadline), so a late timer on a busy loop, or uvloop's
  millisecond timers, do not expire it. An item whose deadline has passed when its batch forms
  is failed with ``ExpiredInQueue`` and never reaches the model.
* Deadlines also bound the run, with one timer per run rather than one per item: while a batch
  runs, a single timer waits for the earliest deadline among the items running and queued.
  When it fires, the items past their deadline fail at once (``ExpiredInRun`` if their batch
  is running, ``ExpiredInQueue`` if queued behind it) and the timer moves to the next deadline.
  So a caller needs no timeout of its own around ``submit``: a slow model run cannot hold it
  past its deadline.
* A cancelled caller fails only itself: its rows leave the queue at once (no run wasted),
  or, if its batch is already running, its share of the result is dropped.
* One failing item fails only itself: ``isolation`` re-runs a failed batch in halves.

Adaptive wait (``Batch.adaptive``): waiting only pays when other items will join. The batcher
keeps an EWMA of how often an arriving item finds *company*: a batch running, or items queued
and waiting for a batch. When fewer than half of recent arrivals did, it flushes on the next
loop iteration instead of waiting ``max_wait``: a lone request pays one loop iteration (a few
µs), not ``max_wait``, and items submitted in the same iteration still share a batch (they are
not counted as company, so a few clients in lock-step, all in one batch, do not wait either).
Company, not the arrival rate, is the signal because one closed-loop client can send often
yet never overlaps itself. Flushing whenever the model is idle (greedy batching) was rejected:
under load it yields many small batches, each a full model call (≈ 460 µs of CPU for a
HistGradientBoosting) taken from the core that serves requests.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from buttress.batching.errors import BatcherClosed, ExpiredInQueue, ExpiredInRun, QueueFull
from buttress.batching.isolation import Bisection, Budget
from buttress.batching.observer import BatcherStats, BatchObserver
from buttress.batching.policy import Batch
from buttress.batching.runner import Rows, RunCancelled, Runner

_log = logging.getLogger(__name__)

_CROWD_ALPHA = 0.2  # weight of the latest arrival in the "found company" average
_CROWD_LEVEL = 0.5  # wait for a batch to fill only when most recent arrivals found company
_RUN_ALPHA = 0.2  # weight of the latest run in the run-latency estimate
_DEADLINE_SLACK = 0.001  # keep at least run estimate + this before a deadline when flushing


class _Item:
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
        self.queued = True  # still in the queue, its rows counted in ``_queued_rows``


class _Run:
    __slots__ = ("budget", "items", "rows", "started")

    def __init__(self, items: list[_Item], rows: int, started: float, budget: Budget | None):
        self.items = items
        self.rows = rows
        self.started = started
        self.budget = budget


class Batcher:
    """Groups concurrent ``submit`` calls into model runs; see the module docstring.

    Lives on one event loop (bound lazily by the first ``submit``) and is not thread-safe.
    """

    def __init__(
        self,
        policy: Batch,
        run: Runner,
        *,
        observer: BatchObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self._run = run
        self._observer = observer if observer is not None else BatchObserver()
        self._clock = clock
        self._max_size = policy.max_size
        self._max_queue = policy.max_queue
        self._max_wait = policy.max_wait_seconds
        self._adaptive = policy.adaptive
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: deque[_Item] = deque()
        self._queued_rows = 0
        self._flush_by = math.inf  # earliest item.flush_by in the queue (may be early, never late)
        self._retries: Bisection[_Item] = Bisection()
        self._running = False
        self._timer: asyncio.Handle | None = None
        self._timer_at = math.inf
        self._current: _Run | None = None  # the batch running now
        self._watch: asyncio.TimerHandle | None = None  # the deadline timer while it runs
        self._watch_at = math.inf
        self._flush_soon = False  # the armed timer is an immediate (next-iteration) flush
        self._crowd = 0.0
        self._run_estimate = 0.0
        self._free_since = -math.inf  # when the last batch was answered: waits start here
        self._delivering = False  # a batch's callers are being resumed (see _finished)
        self._closing = False
        self._drained: asyncio.Future[None] | None = None
        self._batches = self._runs = self._rows = self._items = self._max_rows = 0
        self._failed_runs = self._shed = self._expired = self._cancelled = 0

    async def submit(self, rows: Rows, deadline: float | None = None) -> Rows:
        """Predict ``rows`` (2-D, one request's rows) within a batch; return their slice.

        Raises ``QueueFull`` at once when the queue is full, ``ExpiredInQueue`` when
        ``deadline`` passes before the batch forms, and the model's own exception when the
        model fails on these rows.
        """
        size = rows.shape[0] if rows.ndim == 2 else 0
        if not size:
            raise ValueError("submit takes a 2-D array with at least one row")
        if self._closing:
            raise BatcherClosed("the batcher is closed")
        queued = self._queued_rows
        if queued and queued + size > self._max_queue:
            self._shed += 1
            self._notify(self._observer.rejected, size, queued)
            raise QueueFull(f"{queued} rows queued; max_queue is {self._max_queue}")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        now = self._clock()
        if deadline is None:
            deadline = flush_by = math.inf
        elif deadline <= now:
            self._expired += 1
            raise ExpiredInQueue("the deadline passed before the rows were queued")
        else:
            flush_by = deadline - max(self._run_estimate + _DEADLINE_SLACK, (deadline - now) / 2)
            if flush_by < self._flush_by:
                self._flush_by = flush_by
        item = _Item(rows, size, loop.create_future(), deadline, flush_by, now)
        company = self._running or (queued > 0 and not self._flush_soon and not self._delivering)
        self._crowd += _CROWD_ALPHA * (company - self._crowd)
        self._pending.append(item)
        self._queued_rows = queued + size
        if self._running and deadline < self._watch_at:
            self._watch_deadline(deadline, now)
        self._schedule(now)
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
        return BatcherStats(
            batches=self._batches,
            runs=self._runs,
            rows=self._rows,
            items=self._items,
            max_batch_rows=self._max_rows,
            failed_runs=self._failed_runs,
            shed=self._shed,
            expired=self._expired,
            cancelled=self._cancelled,
            queued_rows=self._queued_rows,
            running=self._running,
        )

    # -- scheduling ---------------------------------------------------------------------

    def _schedule(self, now: float) -> None:
        """Decide what happens next; called after every submit, run and timer."""
        if self._running or self._delivering or (self._retries and self._start_retry(now)):
            return
        if not self._queued_rows:
            self._disarm()
            if self._drained is not None and not self._drained.done():
                self._drained.set_result(None)
            return
        if self._closing or self._queued_rows >= self._max_size:
            self._flush(now)
            return
        waiting_since = max(self._pending[0].enqueued, self._free_since)
        flush_at = min(waiting_since + self._max_wait, self._flush_by)
        if flush_at <= now:
            self._flush(now)
            return
        if self._adaptive and self._crowd < _CROWD_LEVEL:
            flush_at = now  # too little company to wait for: flush on the next iteration
        self._arm(flush_at, now)

    def _arm(self, at: float, now: float) -> None:
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        loop = self._loop
        assert loop is not None
        self._timer_at = at
        self._flush_soon = at <= now
        if at <= now:
            self._timer = loop.call_soon(self._on_timer)
        else:
            self._timer = loop.call_later(at - now, self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = math.inf
            self._flush_soon = False

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        self._flush_soon = False
        now = self._clock()
        if self._running or self._delivering or self._retries:
            self._schedule(now)
        else:
            self._flush(now)

    def _flush(self, now: float) -> None:
        """Form a batch from the head of the queue and start it."""
        self._disarm()
        pending, limit = self._pending, self._max_size
        items: list[_Item] = []
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
            self._queued_rows -= item.size
            if item.future.done() or self._expire(item, now):
                continue
            if not items:
                oldest = item.enqueued
            items.append(item)
            rows += item.size
            if rows >= limit:
                break
        if not pending:
            self._flush_by = math.inf
        elif self._flush_by != math.inf:
            self._flush_by = min((i.flush_by for i in pending if i.queued), default=math.inf)
        if not items:  # only possible with the queue now empty: this cannot recurse deeper
            self._schedule(now)
            return
        self._batches += 1
        self._rows += rows
        self._items += len(items)
        self._max_rows = max(self._max_rows, rows)
        self._notify(self._observer.batch_formed, rows, len(items), now - oldest, self._queued_rows)
        self._start(items, rows, None, now)

    def _start_retry(self, now: float) -> bool:
        while self._retries:
            group, budget = self._retries.pop()
            items = [i for i in group if not i.future.done() and not self._expire(i, now)]
            if items:
                self._start(items, sum(i.size for i in items), budget, now)
                return True
        return False

    def _expire(self, item: _Item, now: float) -> bool:
        if item.deadline > now:
            return False
        self._expired += 1
        item.future.set_exception(ExpiredInQueue("the deadline passed while the rows were queued"))
        return True

    # -- running ------------------------------------------------------------------------

    def _start(self, items: list[_Item], rows: int, budget: Budget | None, now: float) -> None:
        loop = self._loop
        assert loop is not None
        self._running = True
        self._runs += 1
        waiter: asyncio.Future[Rows]
        try:
            batch = items[0].rows if len(items) == 1 else np.concatenate([i.rows for i in items])
            # A Future (e.g. from ``in_executor``) is used as is: no task per batch.
            waiter = asyncio.ensure_future(self._run(batch), loop=loop)
        except Exception as exc:  # e.g. rows of different widths, or a sync ``run`` raising
            waiter = loop.create_future()
            waiter.set_exception(exc)
        run = _Run(items, rows, now, budget)
        self._current = run
        earliest = min(item.deadline for item in items)
        if self._pending and self._flush_by < earliest:  # may be early, never late
            earliest = self._flush_by
        self._watch_deadline(earliest, now)
        waiter.add_done_callback(partial(self._finished, run))

    def _watch_deadline(self, at: float, now: float) -> None:
        """(Re-)arm the one deadline timer of the running batch for ``at`` (inf: none)."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self._watch_at = at
        if at != math.inf:
            assert self._loop is not None
            self._watch = self._loop.call_later(max(0.0, at - now), self._on_deadline)

    def _on_deadline(self) -> None:
        """Fail the items whose deadline passed while a batch ran; watch the next one."""
        self._watch = None
        run = self._current
        if run is None:
            self._watch_at = math.inf
            return
        now = self._clock()
        earliest = math.inf
        for item in run.items:
            if item.future.done():
                continue
            if item.deadline <= now:
                self._expired += 1
                item.future.set_exception(ExpiredInRun(
                    "the deadline passed while the batch was running"))
            elif item.deadline < earliest:
                earliest = item.deadline
        for item in self._pending:
            if not item.queued:
                continue
            if item.deadline <= now:
                item.queued = False
                self._queued_rows -= item.size
                self._expire(item, now)
            elif item.deadline < earliest:
                earliest = item.deadline
        self._watch_deadline(earliest, now)

    def _finished(self, run: _Run, waiter: asyncio.Future[Rows]) -> None:
        self._current = None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self._watch_at = math.inf
        now = self._clock()
        elapsed = now - run.started
        self._run_estimate += _RUN_ALPHA * (elapsed - self._run_estimate)
        error: BaseException | None = None
        try:
            if waiter.cancelled():
                error = RunCancelled("the model run was cancelled")
            else:
                error = waiter.exception() or self._deliver(run, waiter.result())
            if error is not None:
                self._failed_runs += 1
                self._failed(run, error)
        except Exception as bug:  # never strand a caller or stop the batcher on a bug here
            _log.exception("batcher: settling a batch failed")
            for item in run.items:
                if not item.future.done():
                    item.future.set_exception(bug)
        finally:
            self._running = False
        self._notify(self._observer.batch_ran, run.rows, len(run.items), elapsed, error)
        if run.budget is None:  # a fresh batch, not a retry of part of one
            self._notify(self._observer.batch_outcome, elapsed, error)
        # The callers just resolved run on the loop's next iteration (they respond). Only
        # after them is the loop free to take in requests again, so the wait for company
        # starts then: a callback queued behind theirs.
        self._delivering = True
        assert self._loop is not None
        self._loop.call_soon(self._delivered)

    def _delivered(self) -> None:
        """The last batch's callers have run: start the wait for company, or flush."""
        self._delivering = False
        now = self._clock()
        self._free_since = now
        self._schedule(now)

    def _deliver(self, run: _Run, result: Rows) -> Exception | None:
        out = np.asarray(result)
        if out.ndim == 0 or out.shape[0] != run.rows:
            got = "a scalar" if out.ndim == 0 else f"{out.shape[0]} rows"
            return ValueError(f"the model returned {got} for a batch of {run.rows} rows")
        items = run.items
        if len(items) == 1:
            if not items[0].future.done():
                items[0].future.set_result(out)
            return None
        start = 0
        for item in items:
            end = start + item.size
            if not item.future.done():  # a cancelled caller's share is dropped
                item.future.set_result(out[start:end])
            start = end
        return None

    def _failed(self, run: _Run, error: BaseException) -> None:
        live = [i for i in run.items if not i.future.done()]
        retryable = isinstance(error, Exception) and not isinstance(error, RunCancelled)
        for item in self._retries.failed(live, run.budget, retryable):
            if not item.future.done():
                item.future.set_exception(error)

    # -- callers and lifecycle ----------------------------------------------------------

    def _abandon(self, item: _Item) -> None:
        self._cancelled += 1
        if item.queued:
            item.queued = False
            self._queued_rows -= item.size
            if not self._queued_rows and not self._running:
                self._schedule(self._clock())

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not None and (self._running or self._queued_rows or self._retries):
            raise RuntimeError("this Batcher is busy on another event loop")
        self._loop = loop
        self._timer = None
        self._timer_at = math.inf
        self._flush_soon = False
        self._running = False
        self._delivering = False

    def _notify(self, hook: Callable[..., None], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            _log.exception("batcher: observer hook %s failed", getattr(hook, "__name__", hook))
