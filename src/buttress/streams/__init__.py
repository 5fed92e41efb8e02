"""Stream input: ``buttress consume TARGET --source URL --sink URL`` serves a message stream
through the same runtime as ``/predict`` (docs/streams.md)."""

from __future__ import annotations

from buttress.streams.consumer import StreamConsumer
from buttress.streams.types import Lag, Message, Record, Sink, Source
from buttress.streams.urls import StreamURL, open_sink, open_source, parse_stream_url

__all__ = ["Lag", "Message", "Record", "Sink", "Source", "StreamConsumer", "StreamURL",
           "open_sink", "open_source", "parse_stream_url"]
