"""``sqlite:///path.db`` features, the embedded default.

One table per entity and namespace, one row per (id, feature), the same shape as a Redis hash
per id: an id may hold some features and not others, a feature added to a table later needs
no migration, and the ``value`` column has no declared type, so SQLite keeps each int, float
or str exactly as written. The primary key (id, name) is the index the ``id IN (...)`` look-up
uses. Tables are created on the first write; reading a table that does not exist yet finds
nothing.

Each look-up is a hop to the connection's thread and back, and under load those hops queue
behind one another and behind the GIL: at 64 concurrent requests the 30 ms feature timeouts
fired for half of them. So, as on Redis, the look-ups of one event-loop iteration travel
together (:mod:`buttress.backends.coalesce`): one hop and one ``SELECT`` per entity per
iteration, however many requests asked.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from functools import partial

from buttress.backends.coalesce import TickBatcher
from buttress.backends.sqlite import SqliteConnection
from buttress.features.store import FeatureStoreUnavailable
from buttress.features.table import FeatureTable, Value, coerce

# SQLite builds before 3.32 allow only 999 parameters per statement.
_CHUNK = 900


class SqliteFeatures:
    def __init__(self, connection: SqliteConnection, namespace: str) -> None:
        self._connection = connection
        self._namespace = namespace
        self._created: set[str] = set()  # touched only on the connection's own thread
        self._lookups: dict[str, TickBatcher[Sequence[str], list[dict[str, Value]]]] = {}

    def _table_name(self, table: FeatureTable) -> str:
        name = f"features:{self._namespace}:{table.entity}"
        return '"' + name.replace('"', '""') + '"'

    async def fetch(self, table: FeatureTable, ids: Sequence[str]) -> list[dict[str, Value]]:
        lookups = self._lookups.get(table.entity)
        if lookups is None:
            lookups = self._lookups[table.entity] = TickBatcher(partial(self._fetch_many, table))
        return await lookups.submit(ids)

    async def _fetch_many(self, table: FeatureTable, requests: Sequence[Sequence[str]]
                          ) -> list[list[dict[str, Value]]]:
        """The rows of several look-ups of one entity: one hop, one ``SELECT`` of their ids;
        each look-up gets dicts of its own (they are the caller's to change)."""
        found = await self._select(table, list(dict.fromkeys(
            key for ids in requests for key in ids)))
        return [[dict(found[key]) for key in ids] for ids in requests]

    async def aclose(self) -> None:
        """Let the look-ups already sent finish."""
        for lookups in self._lookups.values():
            await lookups.aclose()

    async def _select(self, table: FeatureTable, ids: Sequence[str]
                      ) -> dict[str, dict[str, Value]]:
        sql_table = self._table_name(table)
        kinds = {name: type(default) for name, default in table.defaults.items()}

        def select(conn: sqlite3.Connection) -> dict[str, dict[str, Value]]:
            found: dict[str, dict[str, Value]] = {key: {} for key in ids}
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT id, name, value FROM {sql_table} WHERE id IN ({marks})"
                try:
                    cursor = conn.execute(sql, chunk)
                except sqlite3.OperationalError as error:
                    if str(error).startswith("no such table"):
                        break
                    raise
                for key, name, value in cursor:
                    kind = kinds.get(name)
                    if kind is None:
                        continue  # a feature no longer declared
                    if type(value) is not kind:  # written by something other than this store
                        try:
                            value = coerce(value, kind)
                        except ValueError:
                            continue  # the default stands
                    found[key][name] = value
            return found

        try:
            return await self._connection.run(select)
        except sqlite3.Error as error:
            raise FeatureStoreUnavailable(f"sqlite feature store: {error}") from error

    async def write(
        self, table: FeatureTable, rows: Sequence[tuple[str, Mapping[str, Value]]]
    ) -> None:
        sql_table = self._table_name(table)
        params = [(key, name, value) for key, features in rows for name, value in features.items()]

        def upsert(conn: sqlite3.Connection) -> None:
            if sql_table not in self._created:
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {sql_table} ("
                    "id TEXT NOT NULL, name TEXT NOT NULL, value, PRIMARY KEY (id, name)"
                    ") WITHOUT ROWID"
                )
                self._created.add(sql_table)
            conn.execute("BEGIN")
            try:
                conn.executemany(
                    f"INSERT INTO {sql_table} (id, name, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (id, name) DO UPDATE SET value = excluded.value",
                    params,
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        try:
            await self._connection.run(upsert)
        except sqlite3.Error as error:
            raise FeatureStoreUnavailable(f"sqlite feature store: {error}") from error
