"""``redis+sentinel://``: a Redis whose primary Redis Sentinel chooses, so it survives a zone.

``redis+sentinel://sentinel-a:26379,sentinel-b:26379,sentinel-c:26379/mymaster/0?timeout=50ms``
names the sentinels, the master's service name (``sentinel monitor <name> ...``) and the
database; the query string tunes it as it tunes ``redis://`` (``timeout``, ``connect_timeout``,
``max_connections``). redis-py's asyncio Sentinel support does the work: each new connection
asks the sentinels where the primary is, and a connection to a primary that was demoted
(``READONLY``) is dropped, so the next one goes to the primary Sentinel promoted.

What a failover costs is what Redis being away costs (DESIGN: a dead Redis costs a request at
most its timeout, then the component's breaker): commands to the lost primary time out, the
breaker opens and the component answers with its fallback; when the breaker half-opens, a new
connection finds the promoted replica. The sentinels are asked with the same short timeouts,
and one that answers moves to the front of the list, so an unreachable sentinel costs its
connect timeout once, not on every connection.

The pool is redis-py's ``SentinelConnectionPool`` made blocking (as ``redis://`` pools are):
when every connection is busy a caller waits up to ``timeout`` instead of opening more.

One change to redis-py's discovery: it asks the sentinels one after the other, and a caller's
deadline (a 30 ms stage timeout) can cancel it while it waits on an unreachable sentinel
(100 ms connect timeout), every time, so it would never reach the sentinel that answers. Here
the discovery runs as one task shared by the callers of the moment and shielded from their
cancellation: it finishes, puts the sentinel that answered first in the list, and the next
caller finds the primary at once.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from buttress.backends.redis import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_POOL_SIZE,
    DEFAULT_SOCKET_TIMEOUT,
)
from buttress.resilience.durations import seconds

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from buttress.backends.url import BackendURL


def connect_sentinel(url: BackendURL) -> Redis:
    """An asyncio client of the primary that ``url``'s sentinels name, following failovers."""
    from redis.asyncio import BlockingConnectionPool
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
    from redis.backoff import NoBackoff

    class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
        """Sentinel's address discovery with the blocking pool's bounded wait (the MRO puts
        ``BlockingConnectionPool.__init__`` and ``get_connection`` under Sentinel's pool)."""

    timeout = seconds(url.options.get("timeout", DEFAULT_SOCKET_TIMEOUT), name="redis timeout")
    connect_timeout = seconds(url.options.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT),
                              name="connect timeout")
    sockets: dict[str, Any] = {"socket_timeout": timeout,
                               "socket_connect_timeout": connect_timeout}
    class SharedDiscoverySentinel(Sentinel):
        """Sentinel whose master discovery survives its callers' cancellation (see above)."""

        _discoveries: dict[str, asyncio.Future[Any]]

        async def discover_master(self, service_name: str) -> Any:
            running = self._discoveries.get(service_name)
            if running is None or running.done():
                running = asyncio.ensure_future(super().discover_master(service_name))
                # retrieved here, so a discovery whose callers all left logs nothing
                running.add_done_callback(lambda done: done.cancelled() or done.exception())
                self._discoveries[service_name] = running
            return await asyncio.shield(running)

    # No retries when asking a sentinel (a Redis client's default is 3 with a backoff of up
    # to seconds): the next sentinel in the list is the retry.
    sentinel = SharedDiscoverySentinel(  # type: ignore[no-untyped-call]  # untyped in redis-py
        list(url.sentinels), sentinel_kwargs={**sockets, "retry": Retry(NoBackoff(), 0)})
    sentinel._discoveries = {}
    client: Redis = sentinel.master_for(
        url.path,
        connection_pool_class=BlockingSentinelPool,
        db=url.db,
        max_connections=int(url.options.get("max_connections", DEFAULT_POOL_SIZE)),
        timeout=timeout,  # how long to wait for a free connection from the pool
        health_check_interval=30,
        retry_on_timeout=False,
        **sockets,
    )
    return client


async def close_client(client: Redis) -> None:
    """Close ``client``'s pool and, for a Sentinel client, its connections to the sentinels
    (closing a ``redis://`` client this way is just ``aclose``)."""
    pool = client.connection_pool
    await client.aclose()
    manager = getattr(pool, "sentinel_manager", None)
    if manager is not None:
        await manager.aclose()
