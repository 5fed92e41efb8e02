"""Single-flight: concurrent misses on one key run one computation, and all get its result.

The computation runs as its own task and each caller awaits it through ``asyncio.shield``:
a caller that is cancelled (its deadline passed, its client left) stops waiting without
cancelling the computation the others are waiting for. If the computation raises, every waiter
gets the exception. Nothing here knows about caching; the caller decides what the work is.

Written here because the rule is a dozen lines on asyncio primitives and the libraries that
offer it (aiocache's lock, async-lru) bundle a cache of their own we do not want.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Task[T]] = {}

    def pending(self, key: str) -> asyncio.Task[T] | None:
        """The computation in flight for ``key``, if any (await it with :meth:`join`)."""
        return self._flights.get(key)

    async def join(self, flight: asyncio.Task[T]) -> T:
        return await asyncio.shield(flight)

    async def run(self, key: str, work: Callable[[], Coroutine[Any, Any, T]]) -> tuple[T, bool]:
        """Run ``work()`` unless a run for ``key`` is in flight; return (result, led) where
        ``led`` is true for the caller whose call started the computation."""
        flight = self._flights.get(key)
        led = flight is None
        if flight is None:
            flight = asyncio.get_running_loop().create_task(work())
            self._flights[key] = flight
            flight.add_done_callback(lambda done: self._land(key, done))
        return await asyncio.shield(flight), led

    def __len__(self) -> int:
        return len(self._flights)

    def _land(self, key: str, flight: asyncio.Task[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved: if every waiter left, asyncio must not log it
