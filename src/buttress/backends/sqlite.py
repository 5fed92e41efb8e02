"""SQLite, the embedded default: one file, no server to install.

sqlite3 is synchronous. Look-ups against a local indexed file take tens of microseconds, less
than a thread hop, so each connection gets one dedicated worker thread (sqlite3 connections
must stay on one thread) and callers ``await`` :meth:`SqliteConnection.run`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class SqliteConnection:
    """One sqlite3 connection bound to one worker thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite:{path}")
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        return self._conn

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(connection)`` on the connection's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: work(self._connection()))

    def run_sync(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` from synchronous code (the CLI), still on the connection's thread."""
        return self._executor.submit(lambda: work(self._connection())).result()

    def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)
