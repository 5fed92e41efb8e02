"""Stream URLs: which broker, which stream, which consumer group; adapters imported lazily.

- ``redis-stream://host:port/db/STREAM?group=G&consumer=C`` -- a Redis Stream read through a
  consumer group (created if missing), or written with ``XADD``;
- ``nats://host:port/STREAM/SUBJECT?durable=D`` -- a NATS JetStream stream read through a
  durable pull consumer, or written by publishing to ``SUBJECT`` (the stream is created with
  that subject if it does not exist).

An unknown scheme is an error naming the known ones, as for backend URLs.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, urlsplit

from buttress.streams.types import Sink, Source

KNOWN_SCHEMES = ("redis-stream", "nats")
DEAD_LETTER_SUFFIX = "-dead-letters"


class StreamURLError(ValueError):
    """A stream URL cannot be used; the message says why in one line."""


@dataclass(frozen=True)
class StreamURL:
    raw: str
    scheme: str
    host: str
    port: int
    stream: str
    db: int = 0
    subject: str = ""
    options: dict[str, str] = field(default_factory=dict)

    @property
    def group(self) -> str:
        """The consumer group (Redis) or durable consumer (JetStream); default ``buttress``."""
        return self.options.get("group") or self.options.get("durable") or "buttress"

    @property
    def consumer(self) -> str:
        """This process's name in its Redis consumer group: unique per host and process by
        default. Give a stable one (``?consumer=c1``) so a restarted process takes back its
        own pending messages at once instead of after ``claim_idle``."""
        return self.options.get("consumer") or f"{socket.gethostname()}-{os.getpid()}"

    def dead_letters(self) -> StreamURL:
        """Where a sink's dead letters go by default: the same broker, the stream's name with
        ``-dead-letters`` (and for JetStream the subject with ``.dead-letters``)."""
        subject = f"{self.subject}.dead-letters" if self.subject else ""
        stream = (f"{self.stream}_DEAD_LETTERS" if self.scheme == "nats"
                  else self.stream + DEAD_LETTER_SUFFIX)
        return replace(self, raw=f"{self.raw} (dead letters)", stream=stream, subject=subject)


def parse_stream_url(url: str) -> StreamURL:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in KNOWN_SCHEMES:
        known = ", ".join(f"{s}://" for s in KNOWN_SCHEMES)
        raise StreamURLError(f"unknown stream URL {url!r}: the scheme must be one of {known}")
    options = dict(parse_qsl(parts.query))
    path = [p for p in parts.path.split("/") if p]
    host = parts.hostname or "127.0.0.1"
    if scheme == "redis-stream":
        if len(path) != 2 or not path[0].isdigit():
            raise StreamURLError(f"stream URL {url!r}: expected redis-stream://host:port/DB/STREAM")
        return StreamURL(url, scheme, host, parts.port or 6379, stream=path[1], db=int(path[0]),
                         options=options)
    if len(path) != 2:
        raise StreamURLError(f"stream URL {url!r}: expected nats://host:port/STREAM/SUBJECT")
    return StreamURL(url, scheme, host, parts.port or 4222, stream=path[0], subject=path[1],
                     options=options)


async def open_source(url: str | StreamURL) -> Source:
    parsed = parse_stream_url(url) if isinstance(url, str) else url
    if parsed.scheme == "redis-stream":
        from buttress.streams.redis_streams import RedisStreamSource

        return await RedisStreamSource.open(parsed)
    from buttress.streams.jetstream import JetStreamSource

    return await JetStreamSource.open(parsed)


async def open_sink(url: str | StreamURL) -> Sink:
    parsed = parse_stream_url(url) if isinstance(url, str) else url
    if parsed.scheme == "redis-stream":
        from buttress.streams.redis_streams import RedisStreamSink

        return RedisStreamSink(parsed)
    from buttress.streams.jetstream import JetStreamSink

    return await JetStreamSink.open(parsed)
