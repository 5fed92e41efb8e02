"""``sqlite:///var/registry.db``: the embedded registry, shared by the processes of a machine.

Each document is stored as the JSON of its record (the same bytes the Redis strategy stores).
Writes of alias state are ``BEGIN IMMEDIATE`` transactions: the compare-and-set on the
revision, the history entry and the change counter commit together or not at all, and two
processes changing one model serialize on SQLite's write lock. Watchers poll the change
counter (one indexed read), which is cheaper than re-reading every model's state.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from buttress.backends.sqlite import SqliteConnection
from buttress.registry.errors import RegistryUnavailable, VersionExists
from buttress.registry.records import AliasState, Change, ModelVersion, Serving

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS registry_versions (
  name TEXT NOT NULL, version TEXT NOT NULL, number INTEGER NOT NULL, document TEXT NOT NULL,
  PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS registry_state (
  name TEXT PRIMARY KEY, revision INTEGER NOT NULL, document TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS registry_history (
  id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, document TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS registry_history_by_name ON registry_history (name, id);
CREATE TABLE IF NOT EXISTS registry_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS registry_serving (
  replica TEXT NOT NULL, name TEXT NOT NULL, expires_at REAL NOT NULL, document TEXT NOT NULL,
  PRIMARY KEY (replica, name));
"""


class _Sleep:
    """SQLite has no notification: the watcher's re-check period is its only signal."""

    async def wait(self, at_most: float) -> None:
        await asyncio.sleep(at_most)


class SqliteRegistry:
    def __init__(self, connection: SqliteConnection) -> None:
        self._connection = connection
        self._ready = False  # touched only on the connection's own thread

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def prepared(conn: sqlite3.Connection) -> T:
            if not self._ready:
                conn.executescript(_SCHEMA)
                self._ready = True
            return work(conn)

        try:
            return await self._connection.run(prepared)
        except (sqlite3.Error, OSError) as error:
            raise RegistryUnavailable(
                f"registry sqlite:///{self._connection.path}: {error}") from error

    async def add_version(self, record: ModelVersion) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO registry_versions VALUES (?, ?, ?, ?)",
                         (record.name, record.version, record.number, record.to_json().decode()))

        try:
            await self._run(insert)
        except RegistryUnavailable as error:
            if isinstance(error.__cause__, sqlite3.IntegrityError):
                raise VersionExists(
                    f"model {record.name!r} already has a version {record.version!r}") from None
            raise

    async def versions(self, name: str) -> list[ModelVersion]:
        rows = await self._run(lambda conn: conn.execute(
            "SELECT document FROM registry_versions WHERE name = ? ORDER BY number",
            (name,)).fetchall())
        return [ModelVersion.from_json(document) for (document,) in rows]

    async def names(self) -> list[str]:
        rows = await self._run(lambda conn: conn.execute(
            "SELECT DISTINCT name FROM registry_versions ORDER BY name").fetchall())
        return [name for (name,) in rows]

    async def state(self, name: str) -> AliasState:
        row = await self._run(lambda conn: conn.execute(
            "SELECT document FROM registry_state WHERE name = ?", (name,)).fetchone())
        return AliasState() if row is None else AliasState.from_json(row[0])

    async def write_state(self, name: str, state: AliasState, change: Change) -> bool:
        def compare_and_set(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT revision FROM registry_state WHERE name = ?",
                                   (name,)).fetchone()
                if (row[0] if row else 0) != state.revision - 1:
                    conn.execute("ROLLBACK")
                    return False
                conn.execute(
                    "INSERT INTO registry_state VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
                    "SET revision = excluded.revision, document = excluded.document",
                    (name, state.revision, state.to_json().decode()))
                conn.execute("INSERT INTO registry_history (name, document) VALUES (?, ?)",
                             (name, change.to_json().decode()))
                conn.execute("INSERT INTO registry_meta VALUES ('changes', 1) ON CONFLICT (key) "
                             "DO UPDATE SET value = value + 1")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return True

        return await self._run(compare_and_set)

    async def history(self, name: str, limit: int) -> list[Change]:
        rows = await self._run(lambda conn: conn.execute(
            "SELECT document FROM registry_history WHERE name = ? ORDER BY id DESC LIMIT ?",
            (name, limit)).fetchall())
        return [Change.from_json(document) for (document,) in reversed(rows)]

    async def now(self) -> float:
        """This machine's clock: every process sharing one SQLite file runs on one machine."""
        return time.time()

    async def report_serving(self, report: Serving) -> None:
        def upsert(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM registry_serving WHERE expires_at < ?",
                         (report.reported_at,))
            conn.execute(
                "INSERT INTO registry_serving VALUES (?, ?, ?, ?) ON CONFLICT (replica, name) "
                "DO UPDATE SET expires_at = excluded.expires_at, document = excluded.document",
                (report.replica, report.name, report.expires_at, report.to_json().decode()))

        await self._run(upsert)

    async def serving(self, name: str | None, now: float) -> list[Serving]:
        rows = await self._run(lambda conn: conn.execute(
            "SELECT document FROM registry_serving WHERE expires_at >= ? "
            "AND (? IS NULL OR name = ?) ORDER BY name, replica", (now, name, name)).fetchall())
        return [Serving.from_json(document) for (document,) in rows]

    async def change_mark(self) -> int:
        row = await self._run(lambda conn: conn.execute(
            "SELECT value FROM registry_meta WHERE key = 'changes'").fetchone())
        return 0 if row is None else int(row[0])

    @asynccontextmanager
    async def change_signal(self) -> AsyncIterator[_Sleep]:
        yield _Sleep()

    async def aclose(self) -> None:
        """The connection belongs to the registry's ``Connections``, which closes it."""
