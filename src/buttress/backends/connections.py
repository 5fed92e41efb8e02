"""The connections one service holds, shared by its components and closed with it.

Two components on the same URL share one Redis pool or one SQLite connection. Nothing here is
global: a service owns its ``Connections``, so two services can live in one process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from buttress.backends.redis import connect_redis
from buttress.backends.sentinel import close_client, connect_sentinel
from buttress.backends.sqlite import SqliteConnection
from buttress.backends.url import BackendURL, parse_backend_url

if TYPE_CHECKING:
    from redis.asyncio import Redis


class Connections:
    def __init__(self) -> None:
        self._redis: dict[tuple[str, int | None, int, str, str], Redis] = {}
        self._sqlite: dict[str, SqliteConnection] = {}

    def redis(self, url: BackendURL | str) -> Redis:
        parsed = parse_backend_url(url) if isinstance(url, str) else url
        if not parsed.is_redis:
            raise ValueError(f"{parsed.redacted()} is not a redis:// or redis+sentinel:// URL")
        # path: a sentinel URL's service name (its host is the list of sentinels)
        key = (parsed.host, parsed.port, parsed.db, parsed.scheme, parsed.path)
        if key not in self._redis:
            connect = connect_sentinel if parsed.is_sentinel else connect_redis
            self._redis[key] = connect(parsed)
        return self._redis[key]

    def sqlite(self, url: BackendURL | str) -> SqliteConnection:
        parsed = parse_backend_url(url) if isinstance(url, str) else url
        if not parsed.is_sqlite:
            raise ValueError(f"{parsed.redacted()} is not a sqlite:/// URL")
        if parsed.path not in self._sqlite:
            self._sqlite[parsed.path] = SqliteConnection(parsed.path)
        return self._sqlite[parsed.path]

    async def aclose(self) -> None:
        for client in self._redis.values():
            await close_client(client)
        for conn in self._sqlite.values():
            conn.close()
        self._redis.clear()
        self._sqlite.clear()
