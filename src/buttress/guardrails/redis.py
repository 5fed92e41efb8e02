"""``redis://`` guardrail counts: global across replicas, one Lua call per batch.

Why not the ``limits`` library: its ``hit(..., cost=)`` takes integer costs only, checks one
limit at a time (no all-or-nothing across a request's several guardrails, so a request refused
by its second limit would already have spent its first), its moving window stamps hits with
each caller's clock (replicas' clocks differ), and each hit is its own round trip — while here
a whole batch must cost one. So the algorithms are ours (``lua.py``, mirrored by
``memory.py``), written for exactly those four needs.

Sliding windows keep an exact log (a sorted set of ``(timestamp, cost, key)`` entries, one per
key per batch), not the weighted two-window counter: the counter only estimates the previous
window's share, so it either overshoots or refuses needlessly; the log has no error at all.
Fixed windows are one count per key and window (and admit up to 2x across an edge, see
``FixedWindow``).

Keys: ``buttress:{namespace}:guardrail:<name>:counts`` (+ ``:log``) per guardrail — one hash
for all of its keys, so a batch touching 64 users costs a few commands, not a few per user —
and ``buttress:{namespace}:guardrail:limits`` for runtime overrides. The ``{namespace}`` hash
tag puts them all in one Redis Cluster slot, as a multi-key script needs. Counts and logs
expire (``PEXPIRE``) once their window has passed; the overrides are configuration and stay.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import orjson

from buttress.backends.redis import namespaced_key
from buttress.guardrails.decision import Check, StoredUsage
from buttress.guardrails.lua import ADMIT
from buttress.guardrails.policy import Guardrail, SlidingWindow

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript


class RedisStore:
    """Guardrail counts in Redis under ``buttress:{namespace}:guardrail:...``.

    ``clock`` exists for tests only: it replaces the server's ``TIME`` inside the script so a
    test can cross window edges without sleeping. Production leaves it ``None``.
    """

    def __init__(
        self,
        guards: Sequence[Guardrail],
        client: Redis,
        namespace: str,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._guards = list(guards)
        self._client = client
        self._clock = clock
        self._script: AsyncScript = client.register_script(ADMIT)
        self._sliding = [isinstance(g, SlidingWindow) for g in guards]
        self._limits_key = namespaced_key(namespace, "guardrail", "limits")
        self.keys = [
            [namespaced_key(namespace, "guardrail", g.name, "counts")]
            + ([namespaced_key(namespace, "guardrail", g.name, "log")] if sliding else [])
            for g, sliding in zip(guards, self._sliding, strict=True)
        ]
        """Per guardrail: its counts hash, and for a sliding window its log (see lua.py)."""
        self._spec = [
            (g.name, int(sliding), g.window_us, g.limit_units, 1 << i)
            for i, (g, sliding) in enumerate(zip(guards, self._sliding, strict=True))
        ]

    async def prepare(self) -> None:
        """Load the script now, so the first batch is not the one paying for it. A Redis that
        is down now is not an error here: admissions will report it, under the fail policy."""
        from redis.exceptions import RedisError

        with contextlib.suppress(RedisError, OSError):
            await self._client.script_load(ADMIT)

    def _now_us(self) -> int | None:
        return None if self._clock is None else round(self._clock() * 1_000_000)

    async def admit(self, items: Sequence[Sequence[Check]]) -> list[int]:
        numbers: dict[int, int] = {}  # guardrail index -> its number in this call (1-based)
        slots: dict[tuple[int, str | None], int] = {}
        keys = [self._limits_key]
        guard_spec: list[object] = []
        slot_spec: list[object] = []
        item_spec: list[int] = []
        for checks in items:
            item_spec.append(len(checks))
            for index, key, cost in checks:
                slot = slots.get((index, key))
                if slot is None:
                    number = numbers.get(index)
                    if number is None:
                        number = numbers[index] = len(numbers) + 1
                        guard_spec += (*self._spec[index], len(keys) + 1)
                        keys += self.keys[index]
                    slot = slots[(index, key)] = len(slots) + 1
                    slot_spec += (number, "" if key is None else key)
                item_spec += (slot, cost)
        now = self._now_us()
        payload = orjson.dumps([guard_spec, slot_spec, item_spec])
        result: list[int] = await self._script(
            keys=keys, args=["" if now is None else str(now), payload]
        )
        return result

    async def set_limit(self, index: int, name: str, limit: int | None) -> None:
        if limit is None:
            await self._client.hdel(self._limits_key, name)
        else:
            await self._client.hset(self._limits_key, name, str(limit))

    async def usage(self, scan: int) -> list[StoredUsage]:
        """Two pipelined round trips, not atomic (it need not be). A keyed guardrail with more
        than ``scan`` keys is sampled with one ``HSCAN``: its busiest keys are then the busiest
        of that sample, so the work stays bounded however many keys there are."""
        first = self._client.pipeline(transaction=False)
        first.time()
        first.hgetall(self._limits_key)
        server_time, overrides = await first.execute()
        now = self._now_us() or server_time[0] * 1_000_000 + server_time[1]
        second = self._client.pipeline(transaction=False)
        for index, guard_keys in enumerate(self.keys):
            second.hget(guard_keys[0], "n" if self._sliding[index] else "w")
            second.hscan(guard_keys[0], 0, count=scan)
            if self._sliding[index]:
                second.zrangebyscore(guard_keys[1], "-inf", now - self._guards[index].window_us)
        replies = iter(await second.execute())
        report = []
        for index, guard in enumerate(self._guards):
            marker, (_, fields) = next(replies), next(replies)
            used = {k[1:].decode(): int(v) for k, v in fields.items() if k.startswith(b"k")}
            if self._sliding[index]:  # take off what has left the window since the last call
                for entry in next(replies):
                    _, cost, key = entry.decode().split(":", 2)
                    used[key] = used.get(key, 0) - int(cost)
            elif marker is None or int(marker) < now // guard.window_us:
                used = {}  # the hash holds a past window
            if guard.key is None:
                entries: list[tuple[str | None, int]] = [(None, used.get("", 0))]
            else:
                entries = sorted(((k, v) for k, v in used.items() if v > 0), key=_by_use)
                entries.reverse()
            raw = overrides.get(guard.name.encode())
            limit = guard.limit_units if raw is None else int(raw)
            report.append(StoredUsage(limit, entries))
        return report


def _by_use(entry: tuple[str | None, int]) -> int:
    return entry[1]
