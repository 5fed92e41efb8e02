"""Run a coroutine's first step at once, and pay for scheduling only if it suspends.

Most stages finish without ever suspending: a look-up in a ``memory://`` feature store, a
cached value, an ``async def`` that awaits nothing slow. Giving each of them a Task (so that
independent stages run concurrently) and a timer (its timeout) costs more than the stage
itself: ≈ 3 µs per Task and ≈ 5 µs per ``asyncio.timeout_at`` before the event loop's own
share (docs/performance.md). So the pipeline steps each stage's coroutine once, in the request's
own task, and only if it suspends arms its timeout or starts the stages after it as Tasks.

A coroutine stepped here keeps running in the task that stepped it: ``Resumed`` hands the
future it is waiting on up to that task and forwards every resumption (and cancellation)
back to it, as ``await`` does. That matters: clients such as redis-py bind their own
timeouts to the current task when they enter them, so moving a started coroutine into
another Task (what an "eager task" done by hand would do) would cancel the wrong one.
Python 3.12's ``eager_task_factory`` solves the same problem for Tasks; this is the part
of it the pipeline needs, on 3.11 too.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Resumed(Generic[T]):
    """The rest of a coroutine that suspended on its first step: await it (once) in the
    same task that stepped it."""

    __slots__ = ("_coro", "_waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, T], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, T]:
        coro, pending = self._coro, self._waiting_on
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as thrown:  # cancellation, or a timeout's CancelledError
                try:
                    pending = coro.throw(thrown)
                except StopIteration as finished:
                    return finished.value  # type: ignore[no-any-return]
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as finished:
                    return finished.value  # type: ignore[no-any-return]

    def close(self) -> None:
        """Abandon it (never awaited): closes the coroutine."""
        self._coro.close()


class Finished(Generic[T]):
    """A coroutine that completed on its first step."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value


def first_step(coro: Coroutine[Any, Any, T]) -> Finished[T] | Resumed[T]:
    """Run ``coro`` until it first suspends or returns. Exceptions it raises propagate."""
    try:
        waiting_on = coro.send(None)
    except StopIteration as finished:
        return Finished(finished.value)
    return Resumed(coro, waiting_on)

