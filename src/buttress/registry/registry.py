"""The model registry: versions of each model, the aliases that say which one serves, and an
audit history of every move.

The rules are written once here and in :mod:`buttress.registry.aliases`; where the records
live is a strategy per URL (``sqlite:///var/registry.db`` on one machine, ``redis://`` for
replicas on several), and artifacts sit in a directory next to it. Every alias move is a
compare-and-set on the model's revision, retried when another writer got there first, so two
operators promoting at once both end up in the history in some order, neither lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, overload

from buttress.backends import Connections, parse_backend_url
from buttress.registry import aliases
from buttress.registry.artifacts import ArtifactStore
from buttress.registry.backend import STRATEGIES, RegistryBackend
from buttress.registry.errors import RegistryUnavailable, UnknownModel, UnknownVersion
from buttress.registry.formats import EXTENSIONS, check_registrable, detect_format
from buttress.registry.loading import LoadedModel, RefusalHook, load_verified
from buttress.registry.records import (
    Action,
    AliasState,
    Change,
    ModelVersion,
    Serving,
    check_alias,
    check_name,
)

if TYPE_CHECKING:
    from buttress.registry.declaration import FromRegistry
    from buttress.registry.watch import RegistryWatcher

DEFAULT_URL = "sqlite:///var/registry.db"
DEFAULT_MODELS_DIR = "var/models"
DEFAULT_NAMESPACE = "registry"
_ATTEMPTS = 20  # compare-and-set retries; only a storm of concurrent writers exhausts them

ChangeHook = Callable[[str, str], None]


class Registry:
    """``Registry(url, models_dir=...)``. Building one does no I/O; close it with
    :meth:`aclose` (or ``async with``). ``on_change(name, action)`` and
    ``on_refused(name, reason)`` are metric hooks: cheap, and they must not raise.
    ``clock`` stamps the audit history (this process's time); serving heartbeats go by
    ``heartbeat_clock``, the registry's own clock unless a test drives it."""

    def __init__(self, url: str = DEFAULT_URL, *, models_dir: str | Path = DEFAULT_MODELS_DIR,
                 namespace: str = DEFAULT_NAMESPACE, connections: Connections | None = None,
                 clock: Callable[[], float] = time.time, on_change: ChangeHook | None = None,
                 on_refused: RefusalHook | None = None,
                 heartbeat_clock: Callable[[], Awaitable[float]] | None = None) -> None:
        self.url = parse_backend_url(url)
        if self.url.scheme not in STRATEGIES:
            raise ValueError(f"registry URL {self.url.redacted()!r}: use sqlite:///path.db "
                             "or redis://host:port/db")
        if not namespace or any(c in namespace for c in "{}:"):
            raise ValueError(f"registry namespace {namespace!r} must be non-empty without {{}}:")
        self.namespace = namespace
        self.artifacts = ArtifactStore(models_dir)
        self._owns_connections = connections is None
        self._connections = connections or Connections()
        self.backend: RegistryBackend = STRATEGIES[self.url.scheme](
            self.url, namespace, self._connections)
        self.clock = clock
        self._heartbeat_clock = heartbeat_clock or self.backend.now
        self._on_change = on_change
        self._on_refused = on_refused

    def __repr__(self) -> str:
        return f"Registry({self.url.redacted()!r}, models_dir={str(self.artifacts.root)!r})"

    async def __aenter__(self) -> Registry:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.backend.aclose()
        if self._owns_connections:
            await self._connections.aclose()

    # -- changes ---------------------------------------------------------------------------

    async def register(self, name: str, path: str | Path, *, who: str, version: str | None = None,
                       format: str | None = None, notes: str = "", why: str = "",
                       allow_pickle: bool = False, trusted_types: Iterable[str] = (),
                       candidate: bool = True) -> ModelVersion:
        """Copy the artifact in, record it with its SHA-256, and (``candidate``) point the
        ``candidate`` alias at it. ``version`` defaults to ``v<n>``, n = versions so far + 1."""
        check_name("model name", name)
        source = Path(path)
        chosen = detect_format(source, format)
        trusted = tuple(trusted_types)
        await asyncio.to_thread(check_registrable, name, source, chosen, allow_pickle, trusted)
        known = await self.backend.versions(name)
        number = max((v.number for v in known), default=0) + 1
        version = check_name("version", version or f"v{number}")
        relative, sha256, size = await asyncio.to_thread(
            self.artifacts.put, name, version, source, EXTENSIONS[chosen])
        record = ModelVersion(name, version, number, chosen, sha256, size, relative, who,
                              self.clock(), notes, allow_pickle, trusted)
        try:
            await self.backend.add_version(record)
        except BaseException:
            self.artifacts.remove(relative)
            raise
        await self._change(name, "register", who, why,
                           lambda s: aliases.register(s, version, candidate))
        return record

    async def promote(self, name: str, version: str, *, who: str, why: str = "") -> Change | None:
        """Point ``stable`` at ``version`` (``previous`` keeps the old one). ``None``: it was
        stable already, nothing changed."""
        await self.version(name, version)  # raises for an unknown name or version
        return await self._change(name, "promote", who, why,
                                  lambda s: aliases.promote(s, version))

    @overload
    async def rollback(self, name: str, *, who: str, why: str = "") -> Change: ...

    @overload
    async def rollback(self, name: str, *, who: str, why: str = "",
                       if_stable: str) -> Change | None: ...

    async def rollback(self, name: str, *, who: str, why: str = "",
                       if_stable: str | None = None) -> Change | None:
        """Point ``stable`` back at the version stable before the current one.

        ``if_stable``: only if ``stable`` is still that version, decided in the same
        compare-and-set as the move; otherwise nothing changes and the answer is ``None``.
        Replicas that judged the same promotion each ask, and only the first moves it."""
        await self.versions(name)  # raises for an unknown name

        def decide(state: AliasState) -> aliases.Move | None:
            if if_stable is not None and state.aliases.get("stable") != if_stable:
                return None
            return aliases.rollback(state, name)

        change = await self._change(name, "rollback", who, why, decide)
        assert change is not None or if_stable is not None  # a plain rollback moves or raises
        return change

    async def _change(self, name: str, action: Action, who: str, why: str,
                      decide: Callable[[AliasState], aliases.Move | None]) -> Change | None:
        for _ in range(_ATTEMPTS):
            move = decide(await self.backend.state(name))
            if move is None:
                return None
            change = Change(name, action, move.alias, move.from_version, move.to_version, who,
                            why, self.clock(), move.state.revision)
            if await self.backend.write_state(name, move.state, change):
                if self._on_change is not None:
                    self._on_change(name, action)
                return change
        raise RegistryUnavailable(f"model {name!r}: gave up after {_ATTEMPTS} concurrent writes")

    # -- reading ---------------------------------------------------------------------------

    async def names(self) -> list[str]:
        return await self.backend.names()

    async def versions(self, name: str) -> list[ModelVersion]:
        found = await self.backend.versions(name)
        if not found:
            known = ", ".join(await self.backend.names()) or "none"
            raise UnknownModel(f"no model named {name!r} (registered: {known})")
        return found

    async def version(self, name: str, version: str) -> ModelVersion:
        found = await self.versions(name)
        for record in found:
            if record.version == version:
                return record
        raise UnknownVersion(f"model {name!r} has no version {version!r} "
                             f"(versions: {', '.join(v.version for v in found)})")

    async def state(self, name: str) -> AliasState:
        return await self.backend.state(name)

    async def resolve(self, name: str, alias: str = "stable") -> ModelVersion:
        """The version ``alias`` points at."""
        check_alias(alias)
        pointed = (await self.backend.state(name)).aliases.get(alias)
        if pointed is None:
            await self.versions(name)  # an unknown model says so first
            raise UnknownVersion(f"model {name!r} has no {alias!r} version yet")
        return await self.version(name, pointed)

    async def history(self, name: str, limit: int = 50) -> list[Change]:
        return await self.backend.history(name, limit)

    # -- serving ---------------------------------------------------------------------------

    async def report_serving(self, replica_id: str, name: str, version: str,
                             ttl: float = 30.0) -> None:
        """A replica's heartbeat: it serves ``version`` of ``name`` for the next ``ttl`` s.

        Stamped, expired and pruned by the registry's clock (Redis ``TIME``), not this
        process's: a replica whose clock is a minute off would otherwise vanish from the
        listing, or prune everyone else's reports."""
        now = await self._heartbeat_clock()
        await self.backend.report_serving(Serving(replica_id, name, version, now, now + ttl))

    async def serving(self, name: str | None = None) -> list[Serving]:
        return await self.backend.serving(name, await self._heartbeat_clock())

    # -- loading and watching --------------------------------------------------------------

    async def load(self, name: str, alias: str = "stable", *, version: str | None = None,
                   allow_pickle: bool = False, trusted_types: Sequence[str] = ()) -> LoadedModel:
        """The model ``alias`` (or an exact ``version``) points at, checksum verified."""
        record = (await self.version(name, version) if version is not None
                  else await self.resolve(name, alias))
        return await load_verified(self.artifacts, record, None if version else alias,
                                   allow_pickle=allow_pickle, trusted_types=trusted_types,
                                   on_refused=self._on_refused)

    def load_declared(self, declared: FromRegistry) -> Awaitable[LoadedModel]:
        """Load what a ``bt.FromRegistry`` declaration names."""
        return self.load(declared.name, declared.alias, allow_pickle=declared.allow_pickle,
                         trusted_types=declared.trusted_types)

    def watch(self, names: Iterable[str] | None = None, *, interval: float | None = None,
              resync_every: float | None = None) -> RegistryWatcher:
        """A watcher of alias moves (of ``names``, or every model); see
        :class:`~buttress.registry.watch.RegistryWatcher`."""
        from buttress.registry.watch import RESYNC_EVERY, RegistryWatcher

        return RegistryWatcher(self, names, interval=interval,
                               resync_every=resync_every or RESYNC_EVERY)
