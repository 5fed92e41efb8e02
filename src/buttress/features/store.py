"""The feature store: batched look-ups of declared features, defaults for whatever is missing.

The look-up is written once here; where the rows live is a strategy per URL scheme
(``memory://``, ``sqlite:///…``, ``redis://…``) picked from a plain dict, the way ``limits``
separates algorithms from storage. Each strategy answers a whole batch in one round trip.

Failures have two shapes, matching the two categories the pipeline reports:

- an id the store does not know is *missing*: its row is the defaults, it is listed in
  :attr:`FeatureLookup.missing` and the lookup's category is ``features_missing``;
- a store that errors or times out raises :class:`FeatureStoreUnavailable`, and only that;
  the caller then serves :meth:`FeatureStore.defaults_for` (category ``features_unavailable``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from buttress.backends import BackendURL, Connections, parse_backend_url
from buttress.features.table import EntityId, FeatureTable, Value
from buttress.resilience.categories import Category

DEFAULT_NAMESPACE = "default"

Row = tuple[EntityId, Mapping[str, object]]


class FeatureStoreUnavailable(Exception):
    """The feature store failed or timed out; serve defaults (``features_unavailable``)."""


@dataclass(slots=True)
class FeatureLookup:
    """The answer to one batched look-up, in the order of the ids asked for.

    Not frozen: a frozen dataclass's ``__init__`` costs 3x a plain one (≈ 1.5 µs a look-up,
    two look-ups a request in the demo); treat it as read-only all the same.

    ``rows[i]`` holds every declared feature of ``ids[i]`` (defaults filled in) and is the
    caller's to change; ``found[i]`` says whether the store knew ``ids[i]``; ``missing`` lists
    the unknown ids once each, in first-seen order.
    """

    entity: str
    ids: tuple[str, ...]
    rows: tuple[dict[str, Value], ...]
    found: tuple[bool, ...]
    missing: tuple[str, ...]
    category: Category | None
    """``None``, ``features_missing`` (some id unknown) or ``features_unavailable``."""

    def __len__(self) -> int:
        return len(self.rows)


class FeatureBackend(Protocol):
    """Where one store's rows live. Each call is one round trip to the storage.

    Backends raise :class:`FeatureStoreUnavailable` for any storage failure.
    """

    async def fetch(self, table: FeatureTable, ids: Sequence[str]) -> list[dict[str, Value]]:
        """The declared features stored for each of ``ids`` (unique), ``{}`` for an unknown id."""
        ...

    async def write(
        self, table: FeatureTable, rows: Sequence[tuple[str, Mapping[str, Value]]]
    ) -> None:
        """Upsert already-coerced features: given features replace stored ones, others stay."""
        ...


BackendFactory = Callable[[BackendURL, str, Connections], FeatureBackend]


def _memory(url: BackendURL, namespace: str, connections: Connections) -> FeatureBackend:
    from buttress.features._memory import MemoryFeatures

    return MemoryFeatures()


def _sqlite(url: BackendURL, namespace: str, connections: Connections) -> FeatureBackend:
    from buttress.features._sqlite import SqliteFeatures

    return SqliteFeatures(connections.sqlite(url), namespace)


def _redis(url: BackendURL, namespace: str, connections: Connections) -> FeatureBackend:
    from buttress.features._redis import RedisFeatures

    return RedisFeatures(connections.redis(url), namespace)


STRATEGIES: Mapping[str, BackendFactory] = MappingProxyType(
    {"memory": _memory, "sqlite": _sqlite, "redis": _redis, "rediss": _redis,
     "redis+sentinel": _redis}
)


class FeatureStore:
    """Declared feature tables on one backend URL.

    Building one does no I/O; :meth:`open` binds it to the service's connections.
    ``on_missing(entity, n)`` is called after a look-up in which ``n`` > 0 of the positions
    asked for were unknown ids (a metrics hook; it must be cheap and must not raise).
    """

    def __init__(
        self,
        url: str,
        tables: Iterable[FeatureTable],
        *,
        namespace: str = DEFAULT_NAMESPACE,
        on_missing: Callable[[str, int], None] | None = None,
    ) -> None:
        self.url = parse_backend_url(url)
        if not namespace or any(c in namespace for c in "{}:"):
            raise ValueError(f"feature namespace {namespace!r} must be non-empty without {{}}:")
        self.namespace = namespace
        self._tables: dict[str, FeatureTable] = {}
        for table in tables:
            if table.entity in self._tables:
                raise ValueError(f"entity {table.entity!r} is declared twice")
            self._tables[table.entity] = table
        self._on_missing = on_missing
        self._backend: FeatureBackend | None = None
        self._fetch_now: Callable[[FeatureTable, Sequence[str]], list[dict[str, Value]]] | None
        self._fetch_now = None

    def __repr__(self) -> str:
        entities = ", ".join(self._tables)
        return (
            f"FeatureStore({self.url.redacted()!r}, namespace={self.namespace!r}, "
            f"entities=[{entities}])"
        )

    @property
    def tables(self) -> Mapping[str, FeatureTable]:
        return MappingProxyType(self._tables)

    def table(self, entity: str) -> FeatureTable:
        try:
            return self._tables[entity]
        except KeyError:
            known = ", ".join(self._tables) or "none"
            raise KeyError(f"entity {entity!r} is not declared (declared: {known})") from None

    async def open(self, connections: Connections) -> None:
        """Bind to ``connections`` (owned by the service, which closes them)."""
        self._backend = STRATEGIES[self.url.scheme](self.url, self.namespace, connections)
        # a backend that answers without I/O (memory://) may offer it as a plain call
        self._fetch_now = getattr(self._backend, "fetch_now", None)

    async def aclose(self) -> None:
        """Let the backend finish what it sent, then forget it; the connections belong to, and
        are closed by, their owner."""
        close = getattr(self._backend, "aclose", None)
        if close is not None:
            await close()
        self._backend = None
        self._fetch_now = None

    @property
    def backend(self) -> FeatureBackend:
        if self._backend is None:
            raise RuntimeError(f"{self!r} is not open: await store.open(connections) first")
        return self._backend

    async def get_many(self, entity: str, ids: Sequence[EntityId]) -> FeatureLookup:
        """Every declared feature of each id, in order, in one round trip to the store.

        On the request path (≈ 1 µs per id here): repeated ids are fetched once, but the
        common case, distinct ids, builds no id-to-row dict at all.
        """
        table = self._tables.get(entity) or self.table(entity)  # the latter raises, saying why
        keys = tuple(map(str, ids))
        if not keys:
            return FeatureLookup(entity, (), (), (), (), None)
        unique = keys if len(keys) == 1 else tuple(dict.fromkeys(keys))
        fetch_now = self._fetch_now
        if fetch_now is not None:
            fetched = fetch_now(table, unique)
        else:
            fetched = await self.backend.fetch(table, unique)
        if len(fetched) != len(unique):
            raise FeatureStoreUnavailable(
                f"the {self.url.scheme} store answered {len(fetched)} rows for {len(unique)} ids")
        if unique is not keys and len(unique) != len(keys):
            by_key = dict(zip(unique, fetched, strict=True))
            fetched = [by_key[key] for key in keys]
        rows = table.complete(fetched)
        if all(fetched):  # every id known (an unknown one's stored row is empty)
            return FeatureLookup(entity, keys, rows, (True,) * len(keys), (), None)
        found = tuple(map(bool, fetched))
        missing = tuple(dict.fromkeys(k for k, known in zip(keys, found, strict=True)
                                      if not known))
        if self._on_missing is not None:
            self._on_missing(entity, found.count(False))
        return FeatureLookup(entity, keys, rows, found, missing, Category.FEATURES_MISSING)

    def defaults_for(self, entity: str, ids: Sequence[EntityId]) -> FeatureLookup:
        """The fallback when the store is unavailable: defaults for every id, no I/O."""
        table = self.table(entity)
        keys = tuple(map(str, ids))
        return FeatureLookup(
            entity=entity,
            ids=keys,
            rows=tuple(table.row_of_defaults() for _ in keys),
            found=(False,) * len(keys),
            missing=(),
            category=Category.FEATURES_UNAVAILABLE,
        )

    async def put_many(
        self,
        entity: str,
        rows: Mapping[EntityId, Mapping[str, object]] | Iterable[Row],
    ) -> int:
        """Upsert features per id; returns the number of ids written.

        Values are converted to their declared types first; an undeclared feature or a value
        that does not convert raises ``ValueError`` and nothing is written.
        """
        table = self.table(entity)
        items = rows.items() if isinstance(rows, Mapping) else rows
        coerced: list[tuple[str, Mapping[str, Value]]] = []
        for entity_id, features in items:
            key = str(entity_id)
            values: dict[str, Value] = {}
            for name, value in features.items():
                try:
                    values[name] = table.coerce(name, value)
                except ValueError as error:
                    raise ValueError(f"{entity} {key!r}, feature {name!r}: {error}") from None
            if values:
                coerced.append((key, values))
        if coerced:
            await self.backend.write(table, coerced)
        return len(coerced)
