"""Brokers for the stream tests: the machine's Redis and NATS JetStream, with unique stream
names per test and everything a test created deleted afterwards."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

REDIS = "127.0.0.1:6379"
NATS = "127.0.0.1:4222"


BROKERS = [pytest.param("redis", id="redis"),
           pytest.param("nats", id="nats", marks=pytest.mark.nats)]


@dataclass
class Answered:
    request_id: str
    status: int
    body: dict[str, Any]


@dataclass
class Broker:
    """One broker under test: produce requests, read answers and dead letters, see lag."""

    kind: str
    name: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    client: Any = None
    created: list[str] = field(default_factory=list)

    def source_url(self, group: str = "scorers", **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        if self.kind == "redis":
            return f"redis-stream://{REDIS}/0/{self.name}-in?group={group}&{query}"
        return f"nats://{NATS}/{self.name.upper()}_IN/{self.name}.in?durable={group}&{query}"

    @property
    def sink_url(self) -> str:
        if self.kind == "redis":
            return f"redis-stream://{REDIS}/0/{self.name}-out"
        return f"nats://{NATS}/{self.name.upper()}_OUT/{self.name}.out"

    async def open(self) -> Broker:
        if self.kind == "redis":
            from redis.asyncio import Redis

            self.client = Redis.from_url(f"redis://{REDIS}/0")
            self.created = [f"{self.name}-in", f"{self.name}-out",
                            f"{self.name}-out-dead-letters"]
        else:
            import nats

            self.client = await nats.connect(f"nats://{NATS}")
            upper = self.name.upper()
            self.created = [f"{upper}_IN", f"{upper}_OUT", f"{upper}_OUT_DEAD_LETTERS"]
            js = self.client.jetstream()
            await js.add_stream(name=f"{upper}_IN", subjects=[f"{self.name}.in"])
        return self

    async def aclose(self) -> None:
        if self.kind == "redis":
            await self.client.delete(*self.created)
            await self.client.aclose()
        else:
            from nats.js.errors import NotFoundError

            js = self.client.jetstream()
            for stream in self.created:
                with contextlib.suppress(NotFoundError):
                    await js.delete_stream(stream)
            await self.client.close()

    async def produce(self, bodies: list[bytes]) -> None:
        if self.kind == "redis":
            async with self.client.pipeline(transaction=False) as pipe:
                for body in bodies:
                    pipe.xadd(f"{self.name}-in", {"body": body})
                await pipe.execute()
        else:
            js = self.client.jetstream()
            for body in bodies:
                await js.publish(f"{self.name}.in", body)

    async def _read(self, which: str) -> list[Answered]:
        if self.kind == "redis":
            stream = f"{self.name}-out" + ("-dead-letters" if which == "dead" else "")
            entries = await self.client.xrange(stream)
            return [Answered(f[b"id"].decode(), int(f[b"status"]), orjson.loads(f[b"body"]))
                    for _, f in entries]
        from nats.js.errors import NotFoundError

        js = self.client.jetstream()
        stream = f"{self.name.upper()}_OUT" + ("_DEAD_LETTERS" if which == "dead" else "")
        try:
            last = (await js.stream_info(stream)).state.last_seq
        except NotFoundError:
            return []
        found = []
        for seq in range(1, last + 1):
            msg = await js.get_msg(stream, seq)
            headers = msg.headers or {}
            found.append(Answered(headers["Buttress-Request-Id"],
                                  int(headers["Buttress-Status"]), orjson.loads(msg.data or b"")))
        return found

    async def answers(self) -> list[Answered]:
        return await self._read("answers")

    async def dead_letters(self) -> list[Answered]:
        return await self._read("dead")


def order(i: int, sleep_ms: float = 0.0) -> bytes:
    return orjson.dumps({"id": f"o{i}", "x": i, "sleep_ms": sleep_ms})
