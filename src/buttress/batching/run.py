"""Running a batch: one model call, one callback that answers every caller, and isolation.

Why its own module: this is where each caller gets its own rows back, or its own error.

* One batch runs at a time. The model's awaitable is used as is when it is a Future (e.g.
  from ``in_executor``): no task per batch. Its completion callback resolves every caller's
  future (one callback per batch), each with its slice of the result in submit order.
* A cancelled caller, or one failed by its deadline while the run went on, keeps its
  outcome: its share of the result is dropped.
* One failing item fails only itself: ``isolation`` re-runs a failed batch in halves, before
  any new batch, until each failing item is alone with the model's exception. A cancelled
  run (``RunCancelled``) is not retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial

import numpy as np

from buttress.batching.deadlines import expire
from buttress.batching.isolation import Bisection, Budget
from buttress.batching.observer import Counts
from buttress.batching.queue import Item
from buttress.batching.runner import BatchCall, Rows, RunCancelled

_log = logging.getLogger("buttress.batching")


class Run:
    """One model call on a batch: a fresh batch (``budget`` None) or a retried half."""

    __slots__ = ("budget", "items", "rows", "started")

    def __init__(self, items: list[Item], rows: int, started: float, budget: Budget | None):
        self.items = items
        self.rows = rows
        self.started = started
        self.budget = budget


class Runs:
    """The model's one batch running now, and the halves of failed batches to re-run."""

    __slots__ = ("_counts", "_loop", "_model", "_on_done", "current", "retries")

    def __init__(
        self,
        model: BatchCall,
        counts: Counts,
        on_done: Callable[[Run, asyncio.Future[Rows]], None],
    ) -> None:
        self._model = model
        self._counts = counts
        self._on_done = on_done
        self._loop: asyncio.AbstractEventLoop | None = None
        self.current: Run | None = None  # the batch running now
        self.retries: Bisection[Item] = Bisection()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def start(self, items: list[Item], rows: int, budget: Budget | None, now: float) -> Run:
        """Call the model on ``items``; ``on_done`` follows when it completes."""
        loop = self._loop
        assert loop is not None
        self._counts.runs += 1
        waiter: asyncio.Future[Rows]
        try:
            batch = items[0].rows if len(items) == 1 else np.concatenate([i.rows for i in items])
            # A Future (e.g. from ``in_executor``) is used as is: no task per batch.
            waiter = asyncio.ensure_future(self._model(batch), loop=loop)
        except Exception as exc:  # e.g. rows of different widths, or a sync ``run`` raising
            waiter = loop.create_future()
            waiter.set_exception(exc)
        run = self.current = Run(items, rows, now, budget)
        waiter.add_done_callback(partial(self._on_done, run))
        return run

    def retry(self, now: float) -> Run | None:
        """Start the next half of a failed batch that still has live items, if any."""
        counts = self._counts
        while self.retries:
            group, budget = self.retries.pop()
            items = [i for i in group if not i.future.done() and not expire(i, now, counts)]
            if items:
                return self.start(items, sum(i.size for i in items), budget, now)
        return None

    def settle(self, run: Run, waiter: asyncio.Future[Rows]) -> BaseException | None:
        """The run completed: answer its callers, or queue its halves; return its error."""
        self.current = None
        error: BaseException | None = None
        try:
            if waiter.cancelled():
                error = RunCancelled("the model run was cancelled")
            else:
                error = waiter.exception() or self._deliver(run, waiter.result())
            if error is not None:
                self._counts.failed_runs += 1
                self._failed(run, error)
        except Exception as bug:  # never strand a caller or stop the batcher on a bug here
            _log.exception("batcher: settling a batch failed")
            for item in run.items:
                if not item.future.done():
                    item.future.set_exception(bug)
        return error

    def _deliver(self, run: Run, result: Rows) -> Exception | None:
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

    def _failed(self, run: Run, error: BaseException) -> None:
        live = [i for i in run.items if not i.future.done()]
        retryable = isinstance(error, Exception) and not isinstance(error, RunCancelled)
        for item in self.retries.failed(live, run.budget, retryable):
            if not item.future.done():
                item.future.set_exception(error)
