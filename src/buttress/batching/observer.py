"""Metric hooks and counters for the batcher, with no metrics library imported here.

The hooks run once per batch (never per item), so a Prometheus adapter stays off the
per-request budget: the service subclasses ``BatchObserver`` with pre-bound metrics.
The counters are plain slots the batcher's parts bump in place; ``stats`` copies them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_log = logging.getLogger("buttress.batching")


class BatchObserver:
    """Override the hooks you need; the defaults do nothing.

    An exception raised by a hook is logged and swallowed: metrics never fail a request.
    """

    def batch_formed(self, rows: int, items: int, oldest_wait: float, queued_rows: int) -> None:
        """A fresh batch left the queue: its size, its oldest item's queue wait (seconds)
        and the rows still queued behind it (the queue depth)."""

    def batch_ran(self, rows: int, items: int, seconds: float, error: BaseException | None) -> None:
        """One model run finished (retries after a failure included), with its latency."""

    def batch_outcome(self, seconds: float, error: BaseException | None) -> None:
        """A batch formed from the queue finished its first run (retries of its halves are
        not reported here): one outcome per batch, what a circuit breaker should count."""

    def rejected(self, rows: int, queued_rows: int) -> None:
        """``submit`` raised ``QueueFull`` for ``rows`` with ``queued_rows`` already waiting."""


@dataclass(frozen=True)
class BatcherStats:
    """A snapshot of the batcher's counters, for tests and the admin view."""

    batches: int
    """Fresh batches formed from the queue (retries not included)."""
    runs: int
    """Model runs, retries included."""
    rows: int
    items: int
    max_batch_rows: int
    failed_runs: int
    shed: int
    """Submits refused with ``QueueFull``."""
    expired: int
    """Items skipped because their deadline passed while queued."""
    cancelled: int
    """Callers cancelled while waiting (their rows dropped or their result discarded)."""
    queued_rows: int
    running: bool

    @property
    def mean_batch_rows(self) -> float:
        return self.rows / self.batches if self.batches else 0.0


class Counts:
    """The batcher's running counters, one object shared by its parts (queue, runs, deadlines)."""

    __slots__ = (
        "batches", "cancelled", "expired", "failed_runs", "items", "max_rows", "rows", "runs",
        "shed",
    )

    def __init__(self) -> None:
        self.batches = self.runs = self.rows = self.items = self.max_rows = 0
        self.failed_runs = self.shed = self.expired = self.cancelled = 0

    def snapshot(self, queued_rows: int, running: bool) -> BatcherStats:
        return BatcherStats(
            batches=self.batches,
            runs=self.runs,
            rows=self.rows,
            items=self.items,
            max_batch_rows=self.max_rows,
            failed_runs=self.failed_runs,
            shed=self.shed,
            expired=self.expired,
            cancelled=self.cancelled,
            queued_rows=queued_rows,
            running=running,
        )


def notify(hook: Callable[..., None], *args: Any) -> None:
    """Call an observer hook; a hook that raises is logged and never reaches a caller."""
    try:
        hook(*args)
    except Exception:
        _log.exception("batcher: observer hook %s failed", getattr(hook, "__name__", hook))
