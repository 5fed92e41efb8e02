"""``redis://``: one cache shared by every replica of a service.

Keys (one hash tag per service namespace, so they all live in one Redis Cluster slot)::

    buttress:{ns}:cache:<scope>:generation      the scope's generation; INCR invalidates
    buttress:{ns}:cache:<scope>:<gen>:<hash>    one value, SET with PX = the cache ttl
    buttress:{ns}:cache:<scope>:lock:<hash>     the compute lock of one key, SET NX PX

Invalidation is a *generation counter*, not a SCAN over the prefix: one INCR, O(1), seen by
every replica on its next read; the old generation's values are never read again and expire by
their TTL. Each replica remembers the last generation it saw and names its keys with it; the
read script checks that generation against the counter in the same round trip and answers
"stale, here is the new one" instead of values when they differ, so the client retries once.
Every key a script touches is declared in KEYS, as Redis Cluster requires.

Reads and writes issued in one event-loop iteration go out together
(:mod:`buttress.backends.coalesce`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from buttress.backends.coalesce import TickBatcher
from buttress.backends.redis import namespaced_key
from buttress.cache.store import Write

if TYPE_CHECKING:
    from redis.asyncio import Redis

# KEYS[1] generation; KEYS[2..] value keys named with generation ARGV[1].
_READ = """
local gen = redis.call('GET', KEYS[1]) or '0'
if gen ~= ARGV[1] then return {tonumber(gen)} end
local out = {tonumber(gen)}
for i = 2, #KEYS do out[i] = redis.call('GET', KEYS[i]) end
return out
"""

# KEYS[1] generation; KEYS[i] (i >= 2) a value key named with generation ARGV[2i-2], value
# ARGV[2i-1]; ARGV[1] the ttl in ms. Writes named with a stale generation are dropped.
_WRITE = """
local gen = redis.call('GET', KEYS[1]) or '0'
local out = {tonumber(gen)}
for i = 2, #KEYS do
  if ARGV[2 * i - 2] == gen then
    redis.call('SET', KEYS[i], ARGV[2 * i - 1], 'PX', ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

# KEYS[1] generation, KEYS[2] the value key under generation ARGV[1], KEYS[3] its lock.
# Checking for the value and taking the lock in one step closes the gap in which another
# replica stores the value and releases the lock between our read and our lock.
_CLAIM = """
if (redis.call('GET', KEYS[1]) or '0') == ARGV[1] then
  local value = redis.call('GET', KEYS[2])
  if value then return {1, value} end
end
if redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[3]) then return {2} end
return {3}
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore:
    """Implements :class:`buttress.cache.store.LockingStore` on a shared Redis client."""

    def __init__(self, client: Redis, *, namespace: str, scope: str, ttl: float) -> None:
        self._client = client
        self._prefix = namespaced_key(namespace, "cache", scope)
        self._generation_key = f"{self._prefix}:generation"
        self._ttl_ms = max(1, round(ttl * 1000))
        self._generation = 0
        self._read_script = client.register_script(_READ)
        self._write_script = client.register_script(_WRITE)
        self._claim_script = client.register_script(_CLAIM)
        self._unlock_script = client.register_script(_UNLOCK)
        self._reads: TickBatcher[Sequence[str], tuple[int, list[bytes | None]]] = TickBatcher(
            self._read_batch
        )
        self._writes: TickBatcher[Sequence[Write], int] = TickBatcher(self._write_batch)

    def value_key(self, generation: int, key: str) -> str:
        return f"{self._prefix}:{generation}:{key}"

    async def read(self, keys: Sequence[str]) -> tuple[int, list[bytes | None]]:
        return await self._reads.submit(keys)

    async def write(self, items: Sequence[Write]) -> int:
        return await self._writes.submit(items)

    async def invalidate(self) -> int:
        self._generation = int(await self._client.incr(self._generation_key))
        return self._generation

    async def claim(self, key: str, generation: int, owner: str, ttl: float) -> bytes | bool:
        reply: list[Any] = await self._claim_script(
            keys=[self._generation_key, self.value_key(generation, key), self._lock_key(key)],
            args=[generation, owner, max(1, round(ttl * 1000))],
        )
        if reply[0] == 1:
            return bytes(reply[1])
        return bool(reply[0] == 2)

    async def unlock(self, key: str, owner: str) -> None:
        await self._unlock_script(keys=[self._lock_key(key)], args=[owner])

    def _lock_key(self, key: str) -> str:
        return f"{self._prefix}:lock:{key}"

    async def aclose(self) -> None:
        await self._reads.aclose()
        await self._writes.aclose()

    async def _read_batch(
        self, requests: Sequence[Sequence[str]]
    ) -> list[tuple[int, list[bytes | None]]]:
        keys = [key for request in requests for key in request]
        values: list[bytes | None] = [None] * len(keys)
        for _attempt in range(2):  # a second try only after another replica invalidated
            generation = self._generation
            reply: list[Any] = await self._read_script(
                keys=[self._generation_key, *(self.value_key(generation, k) for k in keys)],
                args=[generation],
            )
            self._generation = int(reply[0])
            if self._generation == generation:
                values = reply[1:]
                break
        out: list[tuple[int, list[bytes | None]]] = []
        start = 0
        for request in requests:
            out.append((generation, values[start : start + len(request)]))
            start += len(request)
        return out

    async def _write_batch(self, requests: Sequence[Sequence[Write]]) -> list[int]:
        owners = [n for n, request in enumerate(requests) for _ in request]
        items = [item for request in requests for item in request]
        written = [0] * len(requests)
        for _attempt in range(2):  # retry only writes that asked for the current generation
            if not items:
                break
            current = self._generation
            generations = [current if gen is None else gen for gen, _, _ in items]
            keys: list[str] = []
            args: list[bytes | str | int] = [self._ttl_ms]
            for gen, (_, key, raw) in zip(generations, items, strict=True):
                keys.append(self.value_key(gen, key))
                args += (str(gen), raw)
            reply: list[int] = await self._write_script(
                keys=[self._generation_key, *keys], args=args
            )
            self._generation = int(reply[0])
            retry_owners, retry_items = [], []
            for owner, item, stored in zip(owners, items, reply[1:], strict=True):
                written[owner] += stored
                if not stored and item[0] is None and self._generation != current:
                    retry_owners.append(owner)
                    retry_items.append(item)
            owners, items = retry_owners, retry_items
        return written
