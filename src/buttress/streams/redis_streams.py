"""Redis Streams: a consumer group for input, ``XADD`` for answers and dead letters.

Reading, in the order a fetch tries them:

1. this consumer's own pending entries (``XREADGROUP ... 0``), once after start: a process
   restarted under the same ``consumer=`` name answers what it had in flight when it died;
2. every ``claim_idle / 2``, ``XAUTOCLAIM`` of entries pending longer than ``claim_idle`` in
   any consumer of the group: a dead consumer's messages move to a live one;
3. new entries (``XREADGROUP ... >``), blocking up to the fetch's wait.

Connections come from :func:`buttress.backends.redis.connect_redis` (blocking pool, explicit
timeouts); the socket timeout defaults to 5 s here because a read blocks for up to a second.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from buttress.backends.redis import connect_redis
from buttress.backends.url import BackendURL
from buttress.resilience.durations import seconds
from buttress.streams.types import Lag, Message, Record

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from buttress.streams.urls import StreamURL

PRODUCER_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
"""A producer's ``id`` field is kept as the request id when it is well-formed (as for
``X-Request-Id``)."""


def _client(url: StreamURL) -> Redis:
    options = {"timeout": url.options.get("timeout", "5s"),
               "max_connections": url.options.get("max_connections", "8")}
    return connect_redis(BackendURL(url.raw, "redis", url.host, url.port, db=url.db,
                                    options=options))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry_ms(entry_id: Any) -> int:
    return int(_text(entry_id).split("-")[0])


class RedisStreamSource:
    def __init__(self, url: StreamURL, client: Redis) -> None:
        self.stream = url.stream
        self.group = url.group
        self.consumer = url.consumer
        self._client = client
        self._claim_idle_ms = int(seconds(url.options.get("claim_idle", "30s"),
                                          name="claim_idle") * 1000)
        self._next_claim = 0.0
        self._claim_cursor = "0-0"
        self._history: str | None = "0"
        """Cursor through our own pending entries; None once they are all handed out."""

    @classmethod
    async def open(cls, url: StreamURL) -> RedisStreamSource:
        from redis.exceptions import ResponseError

        client = _client(url)
        try:
            await client.xgroup_create(url.stream, url.group, id=url.options.get("start", "0"),
                                       mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):  # the group exists: join it
                await client.aclose()
                raise
        return cls(url, client)

    def _messages(self, entries: Sequence[Any]) -> list[Message]:
        messages = []
        for entry_id, fields in entries:
            if fields is None:  # deleted from the stream while pending
                continue
            position = _text(entry_id)
            given = fields.get(b"id")
            request_id = (given.decode() if given and PRODUCER_ID.match(given)
                          else f"{self.stream}:{position}")
            deadline = fields.get(b"deadline_ms")
            messages.append(Message(request_id, fields.get(b"body", b""), position,
                                    deadline.decode() if deadline else None, entry_id))
        return messages

    async def fetch(self, max_count: int, wait_s: float) -> list[Message]:
        client = self._client
        if self._history is not None:
            reply: Any = await client.xreadgroup(self.group, self.consumer, {self.stream:
                                            self._history}, count=max_count)
            entries = reply[0][1] if reply else []
            if entries:
                self._history = _text(entries[-1][0])
                gone = [entry_id for entry_id, fields in entries if fields is None]
                if gone:  # deleted from the stream while pending: nothing left to answer
                    await client.xack(self.stream, self.group, *gone)
                return self._messages(entries)
            self._history = None
        if time.monotonic() >= self._next_claim:
            cursor, entries, *_deleted = await client.xautoclaim(
                self.stream, self.group, self.consumer, self._claim_idle_ms,
                start_id=self._claim_cursor, count=max_count)
            self._claim_cursor = _text(cursor)
            if self._claim_cursor == "0-0":  # scanned the whole pending list: rest a while
                self._next_claim = time.monotonic() + self._claim_idle_ms / 2000
            if entries:
                return self._messages(entries)
        fresh: Any = await client.xreadgroup(self.group, self.consumer, {self.stream: ">"},
                                        count=max_count, block=max(1, int(wait_s * 1000)))
        return self._messages(fresh[0][1]) if fresh else []

    async def ack(self, messages: Sequence[Message]) -> None:
        if messages:
            await self._client.xack(self.stream, self.group, *(m.handle for m in messages))

    async def lag(self) -> Lag:
        """``XINFO GROUPS`` lag (never delivered) plus ``XPENDING`` (delivered, unacked); the
        oldest's age from its entry id, against the Redis server's clock."""
        client = self._client
        async with client.pipeline(transaction=False) as pipe:
            pipe.xinfo_groups(self.stream)
            pipe.xpending(self.stream, self.group)
            pipe.time()
            groups, pending, (now_s, now_us) = await pipe.execute()
        info = next((g for g in groups if _text(g["name"]) == self.group), None)
        if info is None:
            return Lag(0, 0, 0.0)
        waiting = info.get("lag")
        if waiting is None:  # Redis cannot tell after deletions: estimate from the length
            read = info.get("entries-read") or 0
            waiting = max(0, int(await client.xlen(self.stream)) - int(read))
        pending_count = int(pending["pending"])
        oldest: Any = pending["min"] if pending_count else None
        if oldest is None and waiting:
            after = await client.xrange(self.stream, f"({_text(info['last-delivered-id'])}",
                                        count=1)
            oldest = after[0][0] if after else None
        now_ms = now_s * 1000 + now_us // 1000
        age = max(0.0, (now_ms - _entry_ms(oldest)) / 1000) if oldest is not None else 0.0
        return Lag(int(waiting) + pending_count, pending_count, age)

    async def aclose(self) -> None:
        await self._client.aclose()


class RedisStreamSink:
    """``XADD`` of ``id``, ``status``, ``body`` and ``position`` (and ``request`` for a dead
    letter), one pipelined round trip per batch; ``?maxlen=N`` trims the stream
    approximately."""

    def __init__(self, url: StreamURL) -> None:
        self.stream = url.stream
        self._client = _client(url)
        maxlen = url.options.get("maxlen")
        self._maxlen = int(maxlen) if maxlen else None

    async def write(self, records: Sequence[Record]) -> None:
        if not records:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for record in records:
                fields: dict[Any, Any] = {"id": record.request_id, "status": record.status,
                                          "body": record.body, "position": record.position}
                if record.request is not None:
                    fields["request"] = record.request
                pipe.xadd(self.stream, fields, maxlen=self._maxlen, approximate=True)
            await pipe.execute()

    async def aclose(self) -> None:
        await self._client.aclose()
