"""Fail-open: a cache that cannot answer is a miss, never an error for the request.

Every backend call goes through :meth:`FailOpen.call`: an exception or timeout becomes
``FAILED`` and is reported with ``Category.CACHE_UNAVAILABLE``. Behind it a circuit breaker
stops calling a backend that keeps failing: while it is open a call fails at once, without a
network round trip, so a dead Redis costs each request its socket timeout only until the
breaker trips, then nothing. The counters of :class:`~buttress.cache.outcomes.CacheStats` live
here too, next to the observer they feed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import TypeVar

from buttress.cache.outcomes import CacheObserver, CacheStats, CacheUnavailable
from buttress.resilience.breaker import CircuitBreaker
from buttress.resilience.categories import Category

T = TypeVar("T")


class Failed(Enum):
    FAILED = "FAILED"


FAILED = Failed.FAILED


class FailOpen:
    def __init__(
        self, name: str, observer: CacheObserver | None, breaker: CircuitBreaker | None = None
    ) -> None:
        self.breaker = breaker
        self._observer = observer
        self._open_error = CacheUnavailable(f"cache {name}: breaker open, backend not called")
        self.hits = self.misses = self.sets = self.errors = self.evictions = 0

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T | Failed:
        breaker = self.breaker
        if breaker is None:
            try:
                return await operation()
            except Exception as exc:
                self.error(Category.CACHE_UNAVAILABLE, exc)
                return FAILED
        if not breaker.allow():
            self.error(Category.CACHE_UNAVAILABLE, self._open_error)
            return FAILED
        admitted_in = breaker.period
        try:
            result = await operation()
        except asyncio.CancelledError:
            breaker.release_probe(admitted_in)
            raise
        except Exception as exc:
            breaker.record_failure()
            self.error(Category.CACHE_UNAVAILABLE, exc)
            return FAILED
        breaker.record_success()
        return result

    def hit(self, count: int = 1) -> None:
        self.hits += count
        if self._observer is not None:
            self._observer.on_hit(count)

    def miss(self, count: int = 1) -> None:
        self.misses += count
        if self._observer is not None:
            self._observer.on_miss(count)

    def stored(self, count: int) -> None:
        self.sets += count
        if self._observer is not None and count:
            self._observer.on_set(count)

    def evicted(self) -> None:
        self.evictions += 1
        if self._observer is not None:
            self._observer.on_eviction()

    def error(self, category: Category, error: BaseException) -> None:
        self.errors += 1
        if self._observer is not None:
            self._observer.on_error(category, error)

    def stats(self) -> CacheStats:
        return CacheStats(self.hits, self.misses, self.sets, self.errors, self.evictions)
