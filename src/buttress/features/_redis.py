"""``redis://`` features: one hash per entity id, a whole batch read in one round trip.

Keys are ``namespaced_key(namespace, "features", entity, id)``. The namespace is a Redis
Cluster hash tag, so every id of a batch lives in one slot and one call can read them all.
That call is a short Lua script doing HMGET of the declared names on each key (undeclared
fields stay on the server), rather than a pipeline of one HMGET per id: both are one round
trip, but a pipeline costs the client a command to encode and a reply to parse per id, and on
this machine a 10-id look-up took ~270 µs pipelined against ~155 µs as one script (p50, see
``bench/features_lookup.py``). The script only reads, and after a Redis restart redis-py
reloads it on the NOSCRIPT reply. The look-ups of all requests in one event-loop iteration go
out as one such call (:mod:`buttress.backends.coalesce`): under load a request's share of the
round trip's client CPU (40-58 µs) shrinks with the number of requests sharing it, and a
request whose stage times out leaves the others' call and its connection alone. Writes are
pipelined HSETs (``transaction=False``); redis-py
turns values into bytes (``repr`` for floats, so they round-trip exactly) and reads parse them
back to the declared type.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from buttress.backends.coalesce import TickBatcher
from buttress.backends.redis import namespaced_key
from buttress.features.store import FeatureStoreUnavailable
from buttress.features.table import FeatureTable, Value, coerce

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.typing import EncodableT, FieldT

# Commands per pipeline when writing: bounds the client's buffer for large loads.
_WRITE_CHUNK = 1000

_HMGET_EACH = """
local replies = {}
for i, key in ipairs(KEYS) do
  replies[i] = redis.call('HMGET', key, unpack(ARGV))
end
return replies
"""


def _fast_decoder(kind: type[Value]) -> Callable[[bytes], Value]:
    if kind is str:
        return bytes.decode
    if kind is float:
        return _finite_float
    return int  # int(b"3") parses bytes directly


def _finite_float(raw: bytes) -> float:
    value = float(raw)
    if not math.isfinite(value):  # never written by this store (coerce refuses them)
        raise ValueError(f"{raw!r} is not a finite number")
    return value


class RedisFeatures:
    def __init__(self, client: Redis, namespace: str) -> None:
        self._client = client
        self._hmget_each = client.register_script(_HMGET_EACH)
        self._namespace = namespace
        # per entity: a store's entities are unique, and hashing a str is cheaper than a table
        self._decoders: dict[str, tuple[tuple[str, Callable[[bytes], Value]], ...]] = {}
        self._lookups: dict[str, TickBatcher[Sequence[str], list[dict[str, Value]]]] = {}

    def _key(self, table: FeatureTable, entity_id: str) -> str:
        return namespaced_key(self._namespace, "features", table.entity, entity_id)

    def _keys(self, table: FeatureTable, ids: Sequence[str]) -> list[str]:
        """``_key`` for many ids: the shared prefix is built once (a hot path)."""
        prefix = namespaced_key(self._namespace, "features", table.entity, "")
        return [prefix + entity_id for entity_id in ids]

    async def fetch(self, table: FeatureTable, ids: Sequence[str]) -> list[dict[str, Value]]:
        lookups = self._lookups.get(table.entity)
        if lookups is None:  # one coalescer per entity: its ids share the script's field list
            lookups = self._lookups[table.entity] = TickBatcher(partial(self._fetch_many, table))
        return await lookups.submit(ids)

    async def _fetch_many(
        self, table: FeatureTable, requests: Sequence[Sequence[str]]
    ) -> list[list[dict[str, Value]]]:
        """The rows of several look-ups of one entity, in one script call."""
        decoders = self._decoders.get(table.entity)
        if decoders is None:
            decoders = tuple((n, _fast_decoder(table.kind(n))) for n in table.names)
            self._decoders[table.entity] = decoders
        keys = self._keys(table, [entity_id for ids in requests for entity_id in ids])
        try:
            replies = await self._hmget_each(keys=keys, args=table.names)
        except (RedisError, OSError) as error:
            raise FeatureStoreUnavailable(f"redis feature store: {error}") from error
        rows = [_decode(table, decoders, reply) for reply in replies]
        answers: list[list[dict[str, Value]]] = []
        start = 0
        for ids in requests:
            answers.append(rows[start : start + len(ids)])
            start += len(ids)
        return answers

    async def aclose(self) -> None:
        """Let the look-ups already sent finish."""
        for lookups in self._lookups.values():
            await lookups.aclose()

    async def write(
        self, table: FeatureTable, rows: Sequence[tuple[str, Mapping[str, Value]]]
    ) -> None:
        try:
            for start in range(0, len(rows), _WRITE_CHUNK):
                async with self._client.pipeline(transaction=False) as pipe:
                    for entity_id, features in rows[start : start + _WRITE_CHUNK]:
                        fields: dict[FieldT, EncodableT] = {k: v for k, v in features.items()}
                        pipe.hset(self._key(table, entity_id), mapping=fields)
                    await pipe.execute()
        except (RedisError, OSError) as error:
            raise FeatureStoreUnavailable(f"redis feature store: {error}") from error


def _decode(
    table: FeatureTable,
    decoders: tuple[tuple[str, Callable[[bytes], Value]], ...],
    reply: list[bytes | None],
) -> dict[str, Value]:
    features: dict[str, Value] = {}
    for (name, decode), raw in zip(decoders, reply, strict=True):
        if raw is None:
            continue
        try:
            features[name] = decode(raw)
        except ValueError:
            # Written by something other than this store ("3.0" for an int, say): parse it
            # leniently, and if it still is not the declared type, the default stands.
            try:
                features[name] = coerce(raw, table.kind(name))
            except ValueError:
                continue
    return features
