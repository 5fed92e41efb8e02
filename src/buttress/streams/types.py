"""The two contracts a message broker implements for ``buttress consume``.

A :class:`Source` hands out messages in batches and takes acknowledgements; a :class:`Sink`
writes answers. The consumer (:mod:`buttress.streams.consumer`) owns everything else
(in-flight bound, answering through the runtime, dead letters, ack after write, lag metrics),
so a broker is one small class per side: Redis Streams and NATS JetStream here, and Kafka
(``aiokafka``: ``getmany`` for fetch, ``commit`` for ack, ``send_and_wait`` for write,
``end_offsets`` minus the committed offset for lag) would be one more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Message:
    """One request taken from a stream.

    ``request_id`` is the producer's id when the message carries one, else one derived from
    the broker's position of the message, so a redelivered message keeps its id and a sink
    keyed by request id can drop the duplicate.
    """

    request_id: str
    body: bytes
    position: str
    """Where the broker keeps the message (a Redis entry id, a JetStream stream sequence)."""
    deadline_ms: str | None = None
    """The producer's deadline for the answer, as ``X-Deadline-Ms`` is for ``/predict``."""
    handle: Any = None
    """What the source needs to acknowledge it (opaque to the consumer)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One answer (or dead letter) for a sink, keyed by the request's id."""

    request_id: str
    status: int
    body: bytes
    position: str
    """The source message's position, so an answer can be traced back."""
    request: bytes | None = None
    """The message as received: dead letters carry it, so it can be fixed and replayed."""


@dataclass(frozen=True, slots=True)
class Lag:
    """How far a consumer group is behind its stream.

    ``behind`` counts the messages the group has not acknowledged yet (never delivered, or
    delivered and still pending); ``pending`` is the delivered-but-unacknowledged part;
    ``oldest_age_s`` is the age of the oldest of them (0 when the group is caught up).
    """

    behind: int
    pending: int
    oldest_age_s: float


class Source(Protocol):
    stream: str
    """The stream's name (a metrics label)."""
    group: str
    """The consumer group, or durable consumer, that this process consumes as."""

    async def fetch(self, max_count: int, wait_s: float) -> list[Message]:
        """Up to ``max_count`` messages, waiting at most ``wait_s`` for the first one."""
        ...

    async def ack(self, messages: Sequence[Message]) -> None:
        """Mark the messages done: they are not delivered again."""
        ...

    async def lag(self) -> Lag: ...

    async def aclose(self) -> None: ...


class Sink(Protocol):
    stream: str

    async def write(self, records: Sequence[Record]) -> None:
        """Write every record, or raise (then nothing is acknowledged and the messages are
        delivered again)."""
        ...

    async def aclose(self) -> None: ...
