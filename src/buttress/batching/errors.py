"""Why a submitted item got no prediction. A refusal says it is shedding (``failure``); the
expiries are ``TimeoutError``s (:mod:`buttress.resilience.failures`)."""

from __future__ import annotations

from typing import ClassVar

from buttress.resilience.failures import Failure


class QueueFull(Exception):
    """Admitting these rows would exceed ``Batch.max_queue``: shed now rather than queue."""

    failure: ClassVar[Failure] = Failure.UNAVAILABLE


class ExpiredInQueue(TimeoutError):
    """The item's deadline passed before its batch was formed; the model never saw it."""


class ExpiredInRun(TimeoutError):
    """The item's deadline passed while its batch was running; its share of the result, if
    the run still completes, is dropped."""


class BatcherClosed(RuntimeError):
    """``submit`` after ``aclose``: the batcher drains what it has and takes nothing new."""

    failure: ClassVar[Failure] = Failure.UNAVAILABLE
