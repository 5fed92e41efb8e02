"""Watching alias moves, for the processes that serve a model.

    async with registry.watch(["discount"]) as watcher:
        serving = watcher.pointers[("discount", "stable")]     # the state when it started
        async for moved in watcher:                            # AliasMoved, as they happen
            ...

The snapshot is taken when the watcher is entered, so nothing that moves after is missed and
nothing before it is reported. The watcher wakes on the backend's signal (a Redis publish)
or every ``interval`` seconds, whichever is first, reads the registry's change mark, and only
when the mark moved re-reads the alias states and yields the differences. A missed publish
therefore costs at most one ``interval``; SQLite has no publish, so its interval is short.
An unreachable registry is logged and retried: the watcher never ends on its own.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from buttress.registry.backend import ChangeSignal
from buttress.registry.errors import RegistryUnavailable
from buttress.registry.records import ALIASES, AliasMoved

if TYPE_CHECKING:
    from buttress.registry.registry import Registry

log = logging.getLogger("buttress.registry")

DEFAULT_INTERVALS = {"sqlite": 0.2, "redis": 5.0, "rediss": 5.0, "redis+sentinel": 5.0}
"""Seconds between re-checks: SQLite is polled (a one-row read, so often is cheap); Redis
pushes changes and the re-check only heals a missed message."""

RESYNC_EVERY = 30.0
"""Seconds between full re-reads whatever the change mark says: the mark lives with the
registry, so a Redis restarted without persistence starts it again from 0, and a watcher
whose last mark the new count happens to reach would otherwise miss a move until the next."""

Pointers = dict[tuple[str, str], str]


class RegistryWatcher:
    def __init__(self, registry: Registry, names: Iterable[str] | None = None, *,
                 interval: float | None = None, resync_every: float = RESYNC_EVERY) -> None:
        self._registry = registry
        self._names = None if names is None else tuple(names)
        self.interval = interval if interval is not None else DEFAULT_INTERVALS[
            registry.url.scheme]
        if self.interval <= 0 or resync_every <= 0:
            raise ValueError("watch interval and resync_every must be positive")
        self._resync_every = resync_every
        self._synced_at = 0.0
        self.pointers: Pointers = {}
        """``(name, alias) -> version`` as last seen."""
        self.heard: dict[tuple[str, str], float] = {}
        """``(name, alias) -> time.monotonic()`` when this watcher first saw its current
        version (the snapshot's time for those it started with): how long ago a move was
        made, on this process's own clock, whatever clock wrote the registry's history."""
        self._mark = -1
        self._stack: AsyncExitStack | None = None
        self._signal: ChangeSignal | None = None
        self._pending: deque[AliasMoved] = deque()

    async def __aenter__(self) -> RegistryWatcher:
        self._stack = AsyncExitStack()
        self._signal = await self._stack.enter_async_context(
            self._registry.backend.change_signal())
        # mark first, then the states: a change in between is in the states, and the moved
        # mark makes the next look re-read them and find no difference, never a missed move
        self._mark = await self._registry.backend.change_mark()
        self.pointers = await self._read()
        self._synced_at = time.monotonic()
        self.heard = dict.fromkeys(self.pointers, self._synced_at)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = self._signal = None

    def __aiter__(self) -> RegistryWatcher:
        return self

    async def __anext__(self) -> AliasMoved:
        """The next move; moves seen in one look are handed out one by one, in order."""
        if self._signal is None:
            raise RuntimeError("use the watcher inside `async with registry.watch(...)`")
        while not self._pending:
            await self._signal.wait(self.interval)
            full = time.monotonic() - self._synced_at >= self._resync_every
            try:
                self._pending.extend(await self.check(full=full))
            except RegistryUnavailable as error:
                log.warning("registry watcher: %s; retrying in %.1fs", error, self.interval)
        return self._pending.popleft()

    async def check(self, *, full: bool = False) -> list[AliasMoved]:
        """Look now: the moves since the last look. Without ``full``, a change mark that stood
        still means none; ``full`` re-reads the states whatever the mark says."""
        mark = await self._registry.backend.change_mark()
        if mark == self._mark and not full:
            return []
        current = await self._read()
        self._mark = mark
        self._synced_at = time.monotonic()
        moves = [AliasMoved(name, alias, current.get((name, alias)), version)
                 for (name, alias), version in self.pointers.items()
                 if current.get((name, alias)) != version]
        moves += [AliasMoved(name, alias, version, None)
                  for (name, alias), version in current.items()
                  if (name, alias) not in self.pointers]
        self.pointers = current
        for move in moves:
            self.heard[(move.name, move.alias)] = self._synced_at
        return sorted(moves, key=lambda m: (m.name, ALIASES.index(m.alias)))

    async def _read(self) -> Pointers:
        backend = self._registry.backend
        names = self._names if self._names is not None else await backend.names()
        pointers: Pointers = {}
        for name in names:
            for alias, version in (await backend.state(name)).aliases.items():
                pointers[(name, alias)] = version
        return pointers
