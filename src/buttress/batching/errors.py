"""Why a submitted item got no prediction, each mapped to one error category."""

from __future__ import annotations

from typing import ClassVar

from buttress.resilience.categories import Category


class QueueFull(Exception):
    """Admitting these rows would exceed ``Batch.max_queue``: shed now rather than queue."""

    category: ClassVar[Category] = Category.MODEL_UNAVAILABLE


class ExpiredInQueue(TimeoutError):
    """The item's deadline passed before its batch was formed; the model never saw it."""

    category: ClassVar[Category] = Category.MODEL_TIMEOUT


class ExpiredInRun(TimeoutError):
    """The item's deadline passed while its batch was running; its share of the result, if
    the run still completes, is dropped."""

    category: ClassVar[Category] = Category.MODEL_TIMEOUT


class BatcherClosed(RuntimeError):
    """``submit`` after ``aclose``: the batcher drains what it has and takes nothing new."""

    category: ClassVar[Category] = Category.MODEL_UNAVAILABLE
