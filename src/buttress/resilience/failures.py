"""What kind of failure a call had, decided once for every transport.

A stage's failure is one of three kinds, and everything else follows from the kind: the
stage's category (:class:`~buttress.stages.StageCategories` maps each kind to one), whether the
stage's breaker counts it, and the HTTP status ``/v2`` answers with. An exception says its kind
with a ``failure`` class attribute (a full batcher queue, an open remote breaker); any other
``TimeoutError`` is a timeout and anything else an error.
"""

from __future__ import annotations

from enum import StrEnum


class Failure(StrEnum):
    ERROR = "error"
    """The dependency raised or answered wrongly: its fault, counted by its breaker."""
    TIMEOUT = "timeout"
    """No answer in time: the dependency's fault only when its own timeout ran out."""
    UNAVAILABLE = "unavailable"
    """Refused without being tried (a breaker open, a queue full): shedding, never counted."""


def failure_of(error: BaseException) -> Failure:
    kind: Failure | None = getattr(error, "failure", None)
    if kind is not None:
        return kind
    return Failure.TIMEOUT if isinstance(error, TimeoutError) else Failure.ERROR


def counts_against_breaker(failure: Failure, *, caller_gave_up: bool) -> bool:
    """Whether a failure of this kind is the dependency's fault.

    A caller that gave up (the request's own deadline, shorter than the stage's timeout, ran
    out first) says nothing about the dependency: counting it would let one client's
    ``X-Deadline-Ms: 0`` open a breaker shared by every client. Shedding is not a failure.
    """
    if failure is Failure.ERROR:
        return True
    if failure is Failure.TIMEOUT:
        return not caller_gave_up
    return False
