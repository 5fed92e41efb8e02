"""Dynamic server-side batching: ``Batch`` declares it, ``Batcher`` runs it."""

from buttress.batching.batcher import Batcher
from buttress.batching.errors import BatcherClosed, ExpiredInQueue, ExpiredInRun, QueueFull
from buttress.batching.observer import BatcherStats, BatchObserver
from buttress.batching.policy import Batch
from buttress.batching.runner import BatchCall, Rows, RunCancelled, in_executor

__all__ = [
    "Batch",
    "BatchCall",
    "BatchObserver",
    "Batcher",
    "BatcherClosed",
    "BatcherStats",
    "ExpiredInQueue",
    "ExpiredInRun",
    "QueueFull",
    "Rows",
    "RunCancelled",
    "in_executor",
]
