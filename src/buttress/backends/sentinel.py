"""``redis+sentinel://``: a Redis whose primary Redis Sentinel chooses, so it survives a zone.

``redis+sentinel://sentinel-a:26379,sentinel-b:26379,sentinel-c:26379/mymaster/0?timeout=50ms``
names the sentinels, the master's service name (``sentinel monitor <name> ...``) and the
database; the query string tunes it as it tunes ``redis://`` (``timeout``, ``connect_timeout``,
``max_connections``). redis-py's asyncio Sentinel support does the work: a new connection asks
where the primary is, a connection to a primary that was demoted (``READONLY``) is dropped,
and a connection to an address that is no longer the primary's is closed when released.

What a failover costs is what Redis being away costs (DESIGN: a dead Redis costs a request at
most its timeout, then the component's breaker): commands to the lost primary time out, the
breaker opens and the component answers with its fallback; when the breaker half-opens, a new
connection finds the promoted replica. The pool is redis-py's ``SentinelConnectionPool`` made
blocking (as ``redis://`` pools are). Three changes to how redis-py asks the sentinels, each
for a failure a zone outage produces:

- **Every sentinel at once, a majority's answer.** redis-py asks them one after the other and
  believes the first that answers. A sentinel cut off with the old primary (its zone rejoining)
  still names the old primary; a majority always includes one that saw the failover, and the
  answer with the highest ``config-epoch`` wins. An unreachable sentinel costs nothing while a
  majority answers; while a majority does not, a discovery waits for their timeout.
- **Checked again every second** (``refresh`` in the URL, default 1s) by the first caller that
  takes a connection then: pooled connections never ask, so without this a replica would keep
  writing to an old primary that came back (a split brain whose writes Sentinel then discards,
  breaking the guardrails' counts) until that primary is demoted, seconds later.
- **Shared and shielded.** One discovery at a time per pool, shielded from its callers'
  cancellation: a caller's deadline (a 30 ms stage) may end before a sentinel's timeout
  (100 ms), and the discovery must still finish for the next caller. No client retries with
  backoff when asking a sentinel (redis-py's default): the other sentinels are the retry.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from buttress.backends.redis import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_POOL_SIZE,
    DEFAULT_SOCKET_TIMEOUT,
    HEALTH_CHECK_INTERVAL,
)
from buttress.resilience.durations import seconds

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from buttress.backends.url import BackendURL

DEFAULT_REFRESH = 1.0


async def majority_answer(sentinels: list[Any], service_name: str,
                          valid: Any) -> tuple[str, int] | None:
    """Ask every sentinel; once a majority has answered, the address of the master with the
    highest config epoch among the valid answers (``valid(state)``), else ``None``."""
    majority = len(sentinels) // 2 + 1
    pending = {asyncio.ensure_future(sentinel.sentinel_masters()) for sentinel in sentinels}
    answered, best = 0, None
    try:
        while pending and (answered < majority or best is None):
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is not None:  # unreachable, timed out: not an answer
                    continue
                answered += 1
                state = task.result().get(service_name)
                if state and valid(state) and (
                        best is None or state["config-epoch"] > best["config-epoch"]):
                    best = state
    finally:
        for task in pending:  # the slow ones: not waited for, their errors not logged
            task.cancel()
            task.add_done_callback(_retrieve)
    return None if best is None else (best["ip"], best["port"])


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def connect_sentinel(url: BackendURL) -> Redis:
    """An asyncio client of the primary that ``url``'s sentinels name, following failovers."""
    from redis.asyncio import BlockingConnectionPool
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    refresh = seconds(url.options.get("refresh", DEFAULT_REFRESH), name="sentinel refresh")

    class MajoritySentinel(Sentinel):
        _discoveries: dict[str, asyncio.Future[Any]]

        async def discover_master(self, service_name: str) -> Any:
            running = self._discoveries.get(service_name)
            if running is None or running.done():
                running = asyncio.ensure_future(self._discover(service_name))
                # retrieved here, so a discovery whose callers all left logs nothing
                running.add_done_callback(_retrieve)
                self._discoveries[service_name] = running
            return await asyncio.shield(running)

        async def _discover(self, service_name: str) -> tuple[str, int]:
            address = await majority_answer(
                self.sentinels, service_name,
                lambda state: self.check_master_state(state, service_name))
            if address is None:
                raise MasterNotFoundError(f"no sentinel of {len(self.sentinels)} names a "
                                          f"healthy master for {service_name!r}")
            return address

    class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
        """Sentinel's address discovery with the blocking pool's bounded wait (the MRO puts
        ``BlockingConnectionPool.__init__`` and ``get_connection`` under Sentinel's pool),
        and the primary's address checked again every ``refresh`` seconds."""

        _checked_at = 0.0

        async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
            now = time.monotonic()
            if now - self._checked_at >= refresh:
                self._checked_at = now
                # a new address disconnects idle connections; in-use ones close on release
                await self.get_master_address()  # type: ignore[no-untyped-call]
            return await super().get_connection(  # type: ignore[no-untyped-call]
                *args, **kwargs)

    timeout = seconds(url.options.get("timeout", DEFAULT_SOCKET_TIMEOUT), name="redis timeout")
    connect_timeout = seconds(url.options.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT),
                              name="connect timeout")
    sockets: dict[str, Any] = {"socket_timeout": timeout,
                               "socket_connect_timeout": connect_timeout}
    sentinel = MajoritySentinel(  # type: ignore[no-untyped-call]  # untyped in redis-py
        list(url.sentinels), sentinel_kwargs={**sockets, "retry": Retry(NoBackoff(), 0)})
    sentinel._discoveries = {}
    client: Redis = sentinel.master_for(
        url.path,
        connection_pool_class=BlockingSentinelPool,
        db=url.db,
        max_connections=int(url.options.get("max_connections", DEFAULT_POOL_SIZE)),
        timeout=timeout,  # how long to wait for a free connection from the pool
        # as redis:// (backends/redis.py): health checks, keepalive, one retry at once on a
        # fresh connection after a ConnectionError (which is also what a demoted primary's
        # READONLY becomes: the retry asks the sentinels and goes to the promoted one)
        health_check_interval=HEALTH_CHECK_INTERVAL,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
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
