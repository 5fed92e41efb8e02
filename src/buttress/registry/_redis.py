"""``redis://``: one registry shared by replicas on several machines.

Keys are ``buttress:{<namespace>}:...`` (default namespace ``registry``); the braces are a
Redis Cluster hash tag, so the two scripts below may touch several keys of one registry.
Versions are a hash per model (``HSETNX``: a version is written once), alias state a hash per
model holding its revision and document. A change is one script: compare the revision, store
the state, append to the history, advance the change mark and PUBLISH on
``buttress:{<namespace>}:changes`` — all or nothing, and the publish goes out only for a
change that was stored. Watchers subscribe to that channel and still re-check the mark every
few seconds, because Redis pub/sub delivers at most once: a watcher that was disconnected
during a publish heals at its next re-check.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from buttress.backends.redis import namespaced_key
from buttress.registry.errors import RegistryUnavailable, VersionExists
from buttress.registry.records import AliasState, Change, ModelVersion, Serving

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

log = logging.getLogger("buttress.registry")

_ADD_VERSION = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('SADD', KEYS[2], ARGV[3])
return 1
"""

_WRITE_STATE = """
local revision = tonumber(redis.call('HGET', KEYS[1], 'revision') or '0')
if revision ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'revision', ARGV[2], 'document', ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[5], ARGV[4])
return 1
"""


class _Subscription:
    """Wakes the watcher on a publish; after a Redis failure it re-subscribes on next use,
    and meanwhile the re-check period alone drives the watcher."""

    def __init__(self, client: Redis, channel: str) -> None:
        self._client = client
        self._channel = channel
        self._pubsub: PubSub | None = None

    async def wait(self, at_most: float) -> None:
        try:
            if self._pubsub is None:
                self._pubsub = self._client.pubsub()
                await self._pubsub.subscribe(self._channel)
            await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=at_most)
        except (RedisError, OSError) as error:
            log.warning("registry change channel %s: %s; re-checking every %.1fs",
                        self._channel, error, at_most)
            await self.aclose()
            await asyncio.sleep(at_most)

    async def aclose(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with suppress(RedisError, OSError):
                # redis-py leaves PubSub.aclose unannotated
                await pubsub.aclose()  # type: ignore[no-untyped-call]


class RedisRegistry:
    def __init__(self, client: Redis, namespace: str) -> None:
        self._client = client
        self._namespace = namespace
        self._add_version = client.register_script(_ADD_VERSION)
        self._write_state = client.register_script(_WRITE_STATE)
        self.channel = namespaced_key(namespace, "changes")

    def _key(self, *parts: str) -> str:
        return namespaced_key(self._namespace, *parts)

    async def add_version(self, record: ModelVersion) -> None:
        try:
            added = await self._add_version(
                keys=[self._key("versions", record.name), self._key("names")],
                args=[record.version, record.to_json(), record.name])
        except (RedisError, OSError) as error:
            raise RegistryUnavailable(f"registry redis: {error}") from error
        if not added:
            raise VersionExists(f"model {record.name!r} already has a version {record.version!r}")

    async def versions(self, name: str) -> list[ModelVersion]:
        try:
            documents = await self._client.hvals(self._key("versions", name))
        except (RedisError, OSError) as error:
            raise RegistryUnavailable(f"registry redis: {error}") from error
        return sorted(map(ModelVersion.from_json, documents), key=lambda v: v.number)

    async def names(self) -> list[str]:
        try:
            members = await self._client.smembers(self._key("names"))
        except (RedisError, OSError) as error:
            raise RegistryUnavailable(f"registry redis: {error}") from error
        return sorted(m.decode() if isinstance(m, bytes) else m for m in members)

    async def state(self, name: str) -> AliasState:
        try:
            document = await self._client.hget(self._key("state", name), "document")
        except (RedisError, OSError) as error:
            raise RegistryUnavailable(f"registry redis: {error}") from error
        return AliasState() if document is None else AliasState.from_json(document)

    async def write_state(self, name: str, state: AliasState, change: Change) -> bool:
        keys = [self._key("state", name), self._key("history", name), self._key("mark")]
        args: list[int | bytes | str] = [state.revision - 1, state.revision, state.to_json(),
                                         change.to_json(), self.channel]
        try:
            return bool(await self._write_state(keys=keys, args=args))
        except (RedisError, OSError) as error:
            raise RegistryUnavailable(f"registry redis: {error}") from error

    async def history(self, name: str, limit: int) -> list[Change]:
        try:
            documents = await self._client.lrange(self._key("history", name), -limit, -1)
        except (RedisError, OSError) as error:
            raise RegistryUnavailable(f"registry redis: {error}") from error
        return [Change.from_json(document) for document in documents]

    async def now(self) -> float:
        """Redis ``TIME``: one clock for every replica, as the guardrails use."""
        try:
            seconds, microseconds = await self._client.time()
        except (RedisError, OSError) as error:
            raise RegistryUnavailable(f"registry redis: {error}") from error
        return seconds + microseconds / 1e6

    async def report_serving(self, report: Serving) -> None:
        key = self._key("serving")
        try:
            stale = [field for field, document in (await self._client.hgetall(key)).items()
                     if Serving.from_json(document).expires_at < report.reported_at]
            async with self._client.pipeline(transaction=True) as pipe:
                if stale:
                    pipe.hdel(key, *stale)
                pipe.hset(key, f"{report.name}\n{report.replica}", report.to_json())
                await pipe.execute()
        except (RedisError, OSError) as error:
            raise RegistryUnavailable(f"registry redis: {error}") from error

    async def serving(self, name: str | None, now: float) -> list[Serving]:
        try:
            documents = await self._client.hvals(self._key("serving"))
        except (RedisError, OSError) as error:
            raise RegistryUnavailable(f"registry redis: {error}") from error
        reports = [Serving.from_json(d) for d in documents]
        return sorted((r for r in reports if r.expires_at >= now and name in (None, r.name)),
                      key=lambda r: (r.name, r.replica))

    async def change_mark(self) -> int:
        try:
            mark = await self._client.get(self._key("mark"))
        except (RedisError, OSError) as error:
            raise RegistryUnavailable(f"registry redis: {error}") from error
        return int(mark or 0)

    @asynccontextmanager
    async def change_signal(self) -> AsyncIterator[_Subscription]:
        subscription = _Subscription(self._client, self.channel)
        try:
            yield subscription
        finally:
            await subscription.aclose()

    async def aclose(self) -> None:
        """The client belongs to the registry's ``Connections``, which closes it."""
