"""The seam between the cache and its storage: one small protocol per capability.

A store speaks bytes under keys that are already hashed; values, fail-open, single-flight and
observability live above it, written once for every backend (the way ``limits`` separates
strategies from storage).

*Generations* make invalidation O(1): a read returns the generation it saw, and a write made
with that generation is dropped if the scope was invalidated in between, so a value computed
from before an ``invalidate()`` is never stored after it. Writes with ``None`` use the current
generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

Write = tuple[int | None, str, bytes]
"""(generation seen by the read, or None for the current one; key; encoded value)."""


class Store(Protocol):
    """Storage for one cache scope. Methods raise on backend failure; the caller fails open."""

    async def read(self, keys: Sequence[str]) -> tuple[int, list[bytes | None]]:
        """The current generation and the stored bytes of ``keys`` (``None`` where absent)."""
        ...

    async def write(self, items: Sequence[Write]) -> int:
        """Store ``items`` for the scope's ttl; return how many were stored (not stale)."""
        ...

    async def invalidate(self) -> int:
        """Forget every key of the scope; return the new generation."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class LockingStore(Store, Protocol):
    """A store shared by replicas, able to elect one of them to compute a missing key."""

    async def claim(self, key: str, generation: int, owner: str, ttl: float) -> bytes | bool:
        """In one atomic step: the value of ``key`` if it appeared since the read at
        ``generation``; else ``True`` if ``owner`` took the compute lock for ``ttl`` seconds;
        ``False`` if another replica holds it."""
        ...

    async def unlock(self, key: str, owner: str) -> None:
        """Release the lock of ``key`` if ``owner`` still holds it."""
        ...
