"""Redis connections as DESIGN.md asks for them, and key naming that works on Redis Cluster.

- A *blocking* connection pool: when every connection is busy a caller waits (bounded by
  ``pool_timeout``) instead of opening connections without limit.
- Explicit connect and socket timeouts, so a dead Redis costs a caller at most its timeout;
  the component's circuit breaker then keeps it from costing anything.
- Health checks on idle connections, TCP keepalive on all of them.
- A command that fails with ``ConnectionError`` is retried once, at once, on a fresh
  connection. After Redis restarts every pooled connection is dead, and without the retry
  each of them failed one request (opening the breaker, again at each half-open probe: 16-25
  s of fallbacks after a ``kill -9`` and restart). One retry only, and not on timeouts: a hung
  Redis still costs a caller one timeout. A command the server applied just before its
  connection broke may be applied twice; the commands buttress sends are idempotent or, for
  guardrail counters, err on the side of counting more.
- redis-py is pinned in pyproject.toml: releases before 4.5.5 could hand a cancelled command's
  reply to the next caller (redis-py #2665); tests cancel commands to keep that true. A
  cancellation is not a ``ConnectionError``: it is never retried, and redis-py drops the
  connection it interrupted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from buttress.resilience.durations import seconds

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from buttress.backends.url import BackendURL

DEFAULT_SOCKET_TIMEOUT = 0.25
DEFAULT_CONNECT_TIMEOUT = 0.25
DEFAULT_POOL_SIZE = 64
HEALTH_CHECK_INTERVAL = 30
"""Seconds a pooled connection may sit idle before it is PINGed on its next use."""


def connect_redis(url: BackendURL) -> Redis:
    """An asyncio Redis client for ``url`` (``?timeout=100ms&max_connections=32`` tune it)."""
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    timeout = seconds(url.options.get("timeout", DEFAULT_SOCKET_TIMEOUT), name="redis timeout")
    pool = BlockingConnectionPool(
        host=url.host,
        port=url.port or 6379,
        db=url.db,
        max_connections=int(url.options.get("max_connections", DEFAULT_POOL_SIZE)),
        timeout=timeout,  # how long to wait for a free connection from the pool
        socket_timeout=timeout,
        socket_connect_timeout=seconds(
            url.options.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT), name="connect timeout"
        ),
        health_check_interval=HEALTH_CHECK_INTERVAL,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
        retry_on_timeout=False,
        connection_class=_connection_class(url),
    )
    return Redis(connection_pool=pool)


def _connection_class(url: BackendURL) -> type:
    from redis.asyncio.connection import Connection, SSLConnection

    return SSLConnection if url.scheme == "rediss" else Connection


def namespaced_key(namespace: str, *parts: str | int) -> str:
    """``buttress:{namespace}:part:part``. The braces are a Redis Cluster hash tag: all keys of
    one namespace land in one slot, so a Lua script may touch several of them atomically."""
    return ":".join(("buttress", "{" + namespace + "}", *map(str, parts)))
