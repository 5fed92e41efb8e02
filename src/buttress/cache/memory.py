"""``memory://``: a bounded LRU with per-entry TTL, in this process only.

cachetools' ``TTLCache`` does the work (LRU order, lazy expiry, an injectable timer for tests);
the subclass only counts the entries it evicts for room, so a cache that is too small shows up
on the dashboard instead of as a silently low hit ratio.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from cachetools import TTLCache

from buttress.cache.store import Write


class _EvictionCountingCache(TTLCache[str, bytes]):
    def __init__(
        self, maxsize: int, ttl: float, timer: Callable[[], float], on_evict: Callable[[], None]
    ) -> None:
        super().__init__(maxsize=maxsize, ttl=ttl, timer=timer)
        self._on_evict = on_evict

    def popitem(self) -> tuple[str, bytes]:
        # cachetools calls popitem only to make room (expiry and clear() go around it).
        item = super().popitem()
        self._on_evict()
        return item


class MemoryStore:
    """Implements :class:`buttress.cache.store.Store` in a ``TTLCache``."""

    def __init__(
        self,
        *,
        max_entries: int,
        ttl: float,
        on_evict: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries = _EvictionCountingCache(max_entries, ttl, clock, on_evict)
        self._generation = 0

    @property
    def generation(self) -> int:
        return self._generation

    def peek(self, key: str) -> bytes | None:
        """A synchronous read: the hot path of a hit skips a coroutine (≈0.3 µs a layer)."""
        return self._entries.get(key)

    async def read(self, keys: Sequence[str]) -> tuple[int, list[bytes | None]]:
        get = self._entries.get
        return self._generation, [get(key) for key in keys]

    async def write(self, items: Sequence[Write]) -> int:
        written = 0
        for generation, key, raw in items:
            if generation is None or generation == self._generation:
                self._entries[key] = raw
                written += 1
        return written

    async def invalidate(self) -> int:
        self._entries.clear()
        self._generation += 1
        return self._generation

    async def aclose(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
