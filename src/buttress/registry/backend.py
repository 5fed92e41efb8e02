"""The storage seam of the registry: what a strategy (SQLite, Redis) must do, named once.

The rules (version numbering, alias moves, integrity) live in :mod:`buttress.registry.registry`
and :mod:`buttress.registry.aliases`; a strategy only stores documents atomically. Every
method raises :class:`~buttress.registry.errors.RegistryUnavailable` for a storage failure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from types import MappingProxyType
from typing import Protocol

from buttress.backends import BackendURL, Connections
from buttress.registry.records import AliasState, Change, ModelVersion, Serving


class ChangeSignal(Protocol):
    async def wait(self, at_most: float) -> None:
        """Return when a change may have happened elsewhere, or after ``at_most`` seconds."""
        ...


class RegistryBackend(Protocol):
    async def add_version(self, record: ModelVersion) -> None:
        """Store a new version; raise ``VersionExists`` if ``(name, version)`` is taken."""
        ...

    async def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, oldest first."""
        ...

    async def names(self) -> list[str]:
        ...

    async def state(self, name: str) -> AliasState:
        """The alias state (revision 0, nothing set, for a model never changed)."""
        ...

    async def write_state(self, name: str, state: AliasState, change: Change) -> bool:
        """Store ``state`` and append ``change`` to the history, in one atomic step, only if
        the stored revision is still ``state.revision - 1``; ``False`` if someone was first.
        Also advances the change mark (and with Redis, publishes the change)."""
        ...

    async def history(self, name: str, limit: int) -> list[Change]:
        """The last ``limit`` changes of ``name``, oldest first."""
        ...

    async def now(self) -> float:
        """The registry's own clock (seconds since the epoch): what heartbeats are stamped and
        expired by, so replicas whose clocks disagree still see each other's reports."""
        ...

    async def report_serving(self, report: Serving) -> None:
        ...

    async def serving(self, name: str | None, now: float) -> list[Serving]:
        """Reports of ``name`` (all models for ``None``) not yet expired at ``now``."""
        ...

    async def change_mark(self) -> int:
        """A number that grows with every alias change: cheap to read, so a watcher reads
        the states only when it moved."""
        ...

    def change_signal(self) -> AbstractAsyncContextManager[ChangeSignal]:
        ...

    async def aclose(self) -> None:
        ...


BackendFactory = Callable[[BackendURL, str, Connections], RegistryBackend]


def _sqlite(url: BackendURL, namespace: str, connections: Connections) -> RegistryBackend:
    from buttress.registry._sqlite import SqliteRegistry

    return SqliteRegistry(connections.sqlite(url))


def _redis(url: BackendURL, namespace: str, connections: Connections) -> RegistryBackend:
    from buttress.registry._redis import RedisRegistry

    return RedisRegistry(connections.redis(url), namespace)


STRATEGIES: Mapping[str, BackendFactory] = MappingProxyType(
    {"sqlite": _sqlite, "redis": _redis, "rediss": _redis, "redis+sentinel": _redis}
)
