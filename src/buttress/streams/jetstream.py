"""NATS JetStream: a durable pull consumer for input, publishing for answers and dead letters.

The durable consumer acknowledges explicitly; a message not acknowledged within ``ack_wait``
(default 30 s) is delivered again, to this process or another one pulling from the same
durable, so a dead consumer's messages are never lost. Answers are published with
``Nats-Msg-Id`` set to the request id: within the sink stream's duplicate window JetStream
itself drops the second answer of a redelivered message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from buttress.resilience.durations import seconds
from buttress.streams.types import Lag, Message, Record

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

    from buttress.streams.urls import StreamURL

REQUEST_ID_HEADER = "Buttress-Request-Id"
STATUS_HEADER = "Buttress-Status"
POSITION_HEADER = "Buttress-Position"
DEADLINE_HEADER = "X-Deadline-Ms"


async def _connect(url: StreamURL) -> tuple[Client, JetStreamContext]:
    import nats

    client = await nats.connect(f"nats://{url.host}:{url.port}", connect_timeout=2,
                                max_reconnect_attempts=-1, allow_reconnect=True)
    return client, client.jetstream()


async def ensure_stream(js: JetStreamContext, stream: str, subject: str) -> None:
    """Create ``stream`` capturing ``subject`` unless a stream of that name exists."""
    from nats.js.errors import NotFoundError

    try:
        await js.stream_info(stream)
    except NotFoundError:
        await js.add_stream(name=stream, subjects=[subject])


class JetStreamSource:
    def __init__(self, url: StreamURL, client: Client, js: JetStreamContext, pull: Any) -> None:
        self.stream = url.stream
        self.group = url.group
        self.subject = url.subject
        self._client = client
        self._js = js
        self._pull = pull

    @classmethod
    async def open(cls, url: StreamURL) -> JetStreamSource:
        from nats.js.api import AckPolicy, ConsumerConfig

        client, js = await _connect(url)
        try:
            await ensure_stream(js, url.stream, url.subject)
            config = ConsumerConfig(
                durable_name=url.group, ack_policy=AckPolicy.EXPLICIT,
                ack_wait=seconds(url.options.get("ack_wait", "30s"), name="ack_wait"),
                max_ack_pending=int(url.options.get("max_ack_pending", "10000")),
                filter_subject=url.subject)
            pull = await js.pull_subscribe(url.subject, durable=url.group, stream=url.stream,
                                           config=config)
        except BaseException:
            await client.close()
            raise
        return cls(url, client, js, pull)

    async def fetch(self, max_count: int, wait_s: float) -> list[Message]:
        from nats.errors import TimeoutError as NatsTimeout

        try:
            received = await self._pull.fetch(max_count, timeout=wait_s)
        except (TimeoutError, NatsTimeout):
            return []
        messages = []
        for msg in received:
            headers = msg.headers or {}
            position = str(msg.metadata.sequence.stream)
            request_id = (headers.get(REQUEST_ID_HEADER) or headers.get("Nats-Msg-Id")
                          or f"{self.stream}:{position}")
            messages.append(Message(request_id, msg.data, position,
                                    headers.get(DEADLINE_HEADER), msg))
        return messages

    async def ack(self, messages: Sequence[Message]) -> None:
        await asyncio.gather(*(m.handle.ack() for m in messages))

    async def lag(self) -> Lag:
        """``num_pending`` (never delivered) plus ``num_ack_pending`` (delivered, unacked);
        the oldest is the first message of the subject past the ack floor."""
        from nats.js.errors import NotFoundError

        info = await self._js.consumer_info(self.stream, self.group)
        waiting, pending = info.num_pending or 0, info.num_ack_pending or 0
        age = 0.0
        if waiting + pending:
            floor = info.ack_floor.stream_seq if info.ack_floor else 0
            try:
                oldest = await self._js.get_msg(self.stream, seq=(floor or 0) + 1,
                                                subject=self.subject, next=True)
            except NotFoundError:
                oldest = None
            if oldest is not None and oldest.time is not None:
                age = max(0.0, (dt.datetime.now(dt.UTC) - oldest.time).total_seconds())
        return Lag(waiting + pending, pending, age)

    async def aclose(self) -> None:
        await self._client.close()


class JetStreamSink:
    """Publishes the answer's body as it is, with the request id, status and source position
    in headers. A dead letter's body is the error body; the request itself stays in the
    source stream at its position (``Buttress-Position``)."""

    def __init__(self, url: StreamURL, client: Client, js: JetStreamContext) -> None:
        self.stream = url.stream
        self.subject = url.subject
        self._client = client
        self._js = js

    @classmethod
    async def open(cls, url: StreamURL) -> JetStreamSink:
        client, js = await _connect(url)
        try:
            await ensure_stream(js, url.stream, url.subject)
        except BaseException:
            await client.close()
            raise
        return cls(url, client, js)

    async def write(self, records: Sequence[Record]) -> None:
        await asyncio.gather(*(self._publish(r) for r in records))

    async def _publish(self, record: Record) -> None:
        headers = {"Nats-Msg-Id": record.request_id, REQUEST_ID_HEADER: record.request_id,
                   STATUS_HEADER: str(record.status), POSITION_HEADER: record.position}
        await self._js.publish(self.subject, record.body, stream=self.stream, headers=headers)

    async def aclose(self) -> None:
        await self._client.close()

