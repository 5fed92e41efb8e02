"""What a cache look-up can answer, and the hooks that watch it (no Prometheus import here:
the service binds these hooks to its own pre-labelled counters)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, NamedTuple, Protocol

from buttress.resilience.categories import Category


class Missing(Enum):
    MISS = "MISS"

    def __repr__(self) -> str:
        return "MISS"


MISS = Missing.MISS
"""Returned by ``get`` when there is no usable value (absent, expired, or backend down)."""


class CacheStatus(StrEnum):
    """How ``get_or_compute`` answered; the value of the ``X-Cache`` response header."""

    HIT = "hit"
    """From the cache."""
    MISS = "miss"
    """Computed by this call (and stored if it was cacheable)."""
    SHARED = "shared"
    """Computed once for this and other concurrent calls with the same key (in this process,
    or by another replica holding the compute lock)."""
    UNAVAILABLE = "unavailable"
    """The backend failed or its breaker is open: computed without the cache."""


class Lookup(NamedTuple):
    value: Any
    status: CacheStatus


class CacheUnavailable(Exception):
    """The cache backend cannot be used now (its breaker is open); reported, never raised."""


@dataclass(frozen=True)
class CacheStats:
    """Counters since the cache was built. A call joining a computation already in flight
    counts as a miss: its caller waited for a computation."""

    hits: int = 0
    misses: int = 0
    sets: int = 0
    errors: int = 0
    evictions: int = 0


class CacheObserver(Protocol):
    """Called synchronously on the request path: keep each method to a counter increment."""

    def on_hit(self, count: int) -> None: ...

    def on_miss(self, count: int) -> None: ...

    def on_set(self, count: int) -> None: ...

    def on_eviction(self) -> None: ...

    def on_error(self, category: Category, error: BaseException) -> None:
        """``CACHE_UNAVAILABLE`` for backend failures and an open breaker (each call counts);
        ``INTERNAL`` for a value that is not JSON data (a bug in the caller)."""
        ...
