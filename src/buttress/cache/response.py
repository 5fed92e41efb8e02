"""The running cache of one owner: the service's response, or one stage's answers.

Built from a :class:`~buttress.cache.policy.Cache` declaration; opened on the service's
connections. Keys come from :attr:`ResultCache.key` (``key(payload, model_version)``).

What is never stored: a compute that returns ``cacheable=False``. The pipeline passes ``False``
for fallback answers and for anything built while a breaker was open (a stage's or the model's):
those answers are right for the outage, not for the next ``ttl`` seconds. Nor is an answer
computed after the cache's own read failed: the write would most likely fail too, and cost the
request a second backend timeout.

Read-then-compute is write-through: ``get_or_compute`` returns after the value is stored, so
once it returned every replica reads the value. Concurrent misses on one key in this process
compute once (:mod:`.singleflight`); with ``Cache(lock=...)`` on Redis, replicas also elect one
of them (SET NX PX) while the others poll for its answer up to the lock time, then compute
themselves (fail-open, never wait forever).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from buttress.backends import Connections, parse_backend_url
from buttress.cache.failopen import FAILED, FailOpen
from buttress.cache.keys import KeyHasher
from buttress.cache.memory import MemoryStore
from buttress.cache.outcomes import MISS, CacheObserver, CacheStats, CacheStatus, Lookup
from buttress.cache.policy import Cache, check_url
from buttress.cache.redis import RedisStore
from buttress.cache.singleflight import SingleFlight
from buttress.cache.store import LockingStore, Store, Write
from buttress.cache.values import decode_value, encode_value
from buttress.resilience.breaker import Breaker
from buttress.resilience.categories import Category

Compute = Callable[[], Awaitable[tuple[Any, bool]]]
"""``async () -> (value, cacheable)``."""
ComputeMany = Callable[[list[int]], Awaitable[Sequence[tuple[Any, bool]]]]
"""``async (indices of the missing keys) -> [(value, cacheable), ...]`` in that order."""

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_OWNED = object()  # this process holds the compute lock


class ResultCache:
    """One owner's cache. ``key(payload, model_version)`` names an entry; ``get``/``set``,
    ``get_many``/``set_many`` (one round trip), ``get_or_compute`` (single-flight, returns a
    :class:`~buttress.cache.outcomes.Lookup`), ``get_or_compute_many``, ``invalidate``,
    ``stats``. No method raises because of the backend: a failure is a miss, reported."""

    def __init__(
        self,
        policy: Cache,
        *,
        namespace: str,
        scope: str = "response",
        default_url: str = "memory://",
        observer: CacheObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` drives the memory backend's TTL and the breaker (inject it in tests)."""
        for label, name in (("namespace", namespace), ("scope", scope)):
            if not _NAME.match(name):
                raise ValueError(f"cache {label} {name!r}: use letters, digits, '_', '.', '-'")
        self.policy = policy
        self.namespace = namespace
        self.scope = scope
        self.url = check_url(policy.url or default_url)
        self.key = KeyHasher(namespace, scope, policy.key)
        self._breaker_policy = policy.breaker or Breaker.for_backend()
        self._clock = clock
        self._health = FailOpen(f"{namespace}/{scope}", observer)
        self._flights: SingleFlight[tuple[Any, bool]] = SingleFlight()
        self._store: Store | None = None
        self._memory: MemoryStore | None = None  # the same store, read without awaiting
        self._locks: LockingStore | None = None

    def __repr__(self) -> str:
        url = parse_backend_url(self.url).redacted()
        return f"ResultCache({self.namespace}/{self.scope}, {url})"

    async def open(self, connections: Connections) -> None:
        url = parse_backend_url(self.url)
        if url.is_memory:
            self._store = self._memory = MemoryStore(
                max_entries=self.policy.max_entries,
                ttl=self.policy.ttl_seconds,
                on_evict=self._health.evicted,
                clock=self._clock,
            )
            return
        store = RedisStore(
            connections.redis(url),
            namespace=self.namespace,
            scope=self.scope,
            ttl=self.policy.ttl_seconds,
        )
        self._store = store
        self._health.breaker = self._breaker_policy.build(self._clock)
        if self.policy.lock_seconds is not None:
            self._locks = store

    async def aclose(self) -> None:
        if self._store is not None:
            await self._store.aclose()

    @property
    def breaker_state(self) -> str | None:
        """``closed``/``open``/``half_open``; ``None`` for the in-process backend."""
        breaker = self._health.breaker
        return None if breaker is None else breaker.state.value

    def stats(self) -> CacheStats:
        return self._health.stats()

    async def get(self, key: str) -> Any:
        """The cached value of ``key``, or ``MISS``."""
        if self._memory is not None:
            raw = self._memory.peek(key)
        else:
            raw = (await self._read((key,)))[1][0]
        if raw is None:
            self._health.miss()
            return MISS
        return self._decode(raw)

    async def get_many(self, keys: Sequence[str]) -> list[Any]:
        """One backend round trip for all ``keys``; ``MISS`` where there is no value."""
        return self._decode_all((await self._read(keys))[1])

    async def set(self, key: str, value: Any) -> bool:
        """Store ``value`` (JSON data); ``False`` when it was not stored (backend down, or not
        JSON data: reported as ``INTERNAL``)."""
        return await self._write([(None, key, value)]) == 1

    async def set_many(self, items: Iterable[tuple[str, Any]]) -> int:
        return await self._write([(None, key, value) for key, value in items])

    async def invalidate(self) -> bool:
        """Forget every key of this scope, on every replica; ``False`` if the backend failed."""
        store = self._opened()
        return await self._health.call(store.invalidate) is not FAILED

    async def get_or_compute(self, key: str, compute: Compute) -> Lookup:
        """The cached value, or ``compute()``'s, stored when it says it is cacheable."""
        flight = self._flights.pending(key)
        if flight is not None:
            self._health.miss()
            value, _ = await self._flights.join(flight)
            return Lookup(value, CacheStatus.SHARED)
        generation: int | None
        if self._memory is not None:
            generation, raw = self._memory.generation, self._memory.peek(key)
        else:
            generation, (raw,) = await self._read((key,))
        if raw is not None:
            value = self._decode(raw)
            if value is not MISS:
                return Lookup(value, CacheStatus.HIT)
        else:
            self._health.miss()
        (value, computed), led = await self._flights.run(
            key, lambda: self._fill(key, generation, compute)
        )
        if not (led and computed):
            return Lookup(value, CacheStatus.SHARED)
        if generation is None:
            return Lookup(value, CacheStatus.UNAVAILABLE)
        return Lookup(value, CacheStatus.MISS)

    async def get_or_compute_many(self, keys: Sequence[str], compute: ComputeMany) -> list[Any]:
        """Batch form for sub-module caches (e.g. one score per product of an order): one read
        for all keys, one ``compute`` call for the missing ones, one write. No single-flight."""
        generation, raws = await self._read(keys)
        values = self._decode_all(raws)
        missing = [i for i, value in enumerate(values) if value is MISS]
        if not missing:
            return values
        computed = await compute(missing)
        if len(computed) != len(missing):
            raise ValueError(f"compute returned {len(computed)} results for {len(missing)} keys")
        writes: list[tuple[int | None, str, Any]] = []
        for i, (value, cacheable) in zip(missing, computed, strict=True):
            values[i] = value
            if cacheable and generation is not None:
                writes.append((generation, keys[i], value))
        if writes:
            await self._write(writes)
        return values

    async def _fill(self, key: str, generation: int | None, compute: Compute) -> tuple[Any, bool]:
        """(value, computed here); ``False`` when another replica's answer arrived first."""
        locks, lock_for = self._locks, self.policy.lock_seconds
        owner: str | None = None
        # No lock after a failed read: the backend is down and nothing will be written.
        if locks is not None and lock_for is not None and generation is not None:
            token = secrets.token_hex(8)
            elected = await self._elect(locks, key, generation, token, lock_for)
            if elected is _OWNED:
                owner = token
            elif elected is not MISS:
                return elected, False
        try:
            value, cacheable = await compute()
            if cacheable and generation is not None:
                await self._write([(generation, key, value)])
        finally:
            if locks is not None and owner is not None:
                held_by = owner
                await self._health.call(lambda: locks.unlock(key, held_by))
        return value, True

    async def _elect(
        self, locks: LockingStore, key: str, generation: int, token: str, lock_for: float
    ) -> Any:
        """Another replica's answer; ``_OWNED`` once this process holds the compute lock; or
        ``MISS``: compute without the lock (backend failed, or the wait is over).

        A waiter retries the claim rather than only reading, so when the holder finishes
        without storing (an uncacheable fallback) the next waiter takes the lock at once
        instead of waiting out the lock time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + lock_for
        interval = min(max(lock_for / 20, 0.005), 0.05)
        while True:
            claim = await self._health.call(lambda: locks.claim(key, generation, token, lock_for))
            if claim is True:
                return _OWNED
            if isinstance(claim, bytes):
                return self._decode(claim, count=False)
            if claim is FAILED or loop.time() >= deadline:
                return MISS
            await asyncio.sleep(interval)

    async def _read(self, keys: Sequence[str]) -> tuple[int | None, list[bytes | None]]:
        store = self._opened()
        read = await self._health.call(lambda: store.read(keys))
        if read is FAILED:
            return None, [None] * len(keys)
        return read

    async def _write(self, items: Sequence[tuple[int | None, str, Any]]) -> int:
        encoded: list[Write] = []
        for generation, key, value in items:
            try:
                encoded.append((generation, key, encode_value(value)))
            except TypeError as exc:
                self._health.error(Category.INTERNAL, exc)
        if not encoded:
            return 0
        store = self._opened()
        written = await self._health.call(lambda: store.write(encoded))
        if written is FAILED:
            return 0
        self._health.stored(written)
        return written

    def _decode_all(self, raws: list[bytes | None]) -> list[Any]:
        absent = raws.count(None)
        if absent:
            self._health.miss(absent)
        return [MISS if raw is None else self._decode(raw) for raw in raws]

    def _decode(self, raw: bytes, *, count: bool = True) -> Any:
        """The value, counted as a hit; a value that will not decode is an error and a miss."""
        try:
            value = decode_value(raw)
        except ValueError as exc:
            self._health.error(Category.CACHE_UNAVAILABLE, exc)
            if count:
                self._health.miss()
            return MISS
        if count:
            self._health.hit()
        return value

    def _opened(self) -> Store:
        if self._store is None:
            raise RuntimeError(f"{self!r} is not open: await cache.open(connections) first")
        return self._store
