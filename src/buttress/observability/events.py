"""One structured event per request, written off the request path.

A request appends a plain dict to a bounded deque (≈0.4 µs); a background task drains it
every ``flush_interval`` and hands the batch to the sinks, which serialize with orjson. When
the buffer is full the oldest events are dropped and counted (category ``events_dropped``): a
slow disk must never slow a prediction. structlog would cost 3-4 µs per event for processors
we do not need on this path; it remains a fine choice for the application's own logs.

The event schema is versioned: every event carries ``v`` (:data:`SCHEMA_VERSION`) and a
``kind`` (``request``, ``exception``, ``alert``); docs/observability.md lists the fields.
A field is only ever added within a version; renaming or removing one bumps ``v``.

Rotation and retention are written here rather than taken from ``logging.handlers``: those
rotate either by size or by time, not both, keep a count of files rather than days or bytes,
and take a lock per record; this sink writes a whole batch per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

log = logging.getLogger("buttress.observability.events")

Event = dict[str, Any]
SCHEMA_VERSION = 1
"""The ``v`` of every event."""


class EventSink(Protocol):
    """Where flushed events go. ``write`` receives a batch in arrival order."""

    def write(self, events: list[Event]) -> None: ...

    def close(self) -> None: ...


class Deferred:
    """A field whose value is computed by the writer, not by the request that emitted it.

    A prediction summary decodes the response and runs the user's function: a few µs that the
    request need not wait for. ``EventLog.flush`` replaces the ``prediction`` field's
    ``Deferred`` by its value before any sink sees the event.
    """

    __slots__ = ("args", "fn")

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.fn = fn
        self.args = args

    def __call__(self) -> Any:
        return self.fn(*self.args)


DEFERRED_FIELD = "prediction"


def _encode(events: list[Event]) -> bytearray:
    # Appended one by one into one buffer, so each event's bytes are freed at once:
    # joining a generator holds all of them and costs 7x more (2.3 vs 0.32 µs an event,
    # timeit over 1,000 events like the demo's), most of it allocating fresh memory.
    lines = bytearray()
    dumps, option = orjson.dumps, _OPTIONS
    for event in events:
        lines += dumps(event, default=str, option=option)
    return lines


# numpy values and non-string keys can come from a service's prediction summary; anything else
# orjson cannot write becomes its str() (default=str), so one odd value never loses a batch
_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


@dataclass(frozen=True, slots=True)
class Retention:
    """How event files rotate and how long they are kept (``None``: no limit)."""

    rotate_bytes: int | None = 64 * 1024 * 1024
    rotate_interval: float | None = 3600.0
    keep_days: float | None = 7.0
    keep_bytes: int | None = None


_FILE_NAME = re.compile(r"^events-(?P<stamp>[0-9T]+)-(?P<pid>\d+)(?:-(?P<seq>\d+))?\.jsonl$")


class JsonlSink:
    """Appends events as JSON lines to ``<dir>/events-<UTC time>-<pid>-<seq>.jsonl``.

    One file per process at a time, so workers never interleave partial lines; a new file
    when the current one would pass ``rotate_bytes`` or is ``rotate_interval`` old. After each
    rotation (and at start) files older than ``keep_days`` are deleted, then the oldest ones
    until the directory holds at most ``keep_bytes``: never the file a live process is
    writing (its newest). DuckDB reads the directory with one glob.
    """

    def __init__(self, directory: str | Path, retention: Retention | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.retention = retention or Retention()
        self._clock = clock
        self._pid = os.getpid()
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self._size = 0
        self._seq = 0

    @property
    def path(self) -> Path | None:
        """The file being written now."""
        return self._path

    def _open(self, now: float) -> IO[bytes]:
        if self._file is not None:
            self._file.close()
            self._file = None  # a failed open below is tried again at the next write
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
        self._seq += 1
        self._path = self.directory / f"events-{stamp}-{self._pid}-{self._seq:04d}.jsonl"
        # unbuffered: a batch is one write, and a failed one leaves nothing behind to be
        # written later (write() then counts the whole batch as lost, and it is)
        self._file = self._path.open("ab", buffering=0)
        self._opened_at = now
        self._size = self._path.stat().st_size
        self.prune(now)
        return self._file

    def _file_for(self, size: int) -> IO[bytes]:
        now = self._clock()
        if self._file is None:
            return self._open(now)
        retention = self.retention
        if self._size and (
            (retention.rotate_bytes is not None and self._size + size > retention.rotate_bytes)
            or (retention.rotate_interval is not None
                and now - self._opened_at >= retention.rotate_interval)):
            return self._open(now)
        return self._file

    def write(self, events: list[Event]) -> None:
        """Append the batch whole, or raise with the file as it was (a full disk must not
        leave half a line, nor part of a batch that is counted as lost)."""
        lines = _encode(events)
        file = self._file_for(len(lines))
        view = memoryview(lines)
        try:
            while view:
                written = file.write(view)
                if not written:
                    raise OSError(errno.EIO, f"{self._path} took no bytes")
                view = view[written:]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(file.fileno(), self._size)  # only this process appends here
            raise
        self._size += len(lines)

    def prune(self, now: float | None = None) -> list[Path]:
        """Apply the retention to the directory; return the files deleted."""
        retention = self.retention
        if retention.keep_days is None and retention.keep_bytes is None:
            return []
        now = self._clock() if now is None else now
        files: list[tuple[float, int, Path]] = []
        newest: dict[int, tuple[str, int, Path]] = {}
        for path in self.directory.glob("events-*.jsonl"):
            try:
                stat = path.stat()
            except FileNotFoundError:  # another process pruned it
                continue
            files.append((stat.st_mtime, stat.st_size, path))
            match = _FILE_NAME.match(path.name)
            if match:
                pid, order = int(match["pid"]), (match["stamp"], int(match["seq"] or 0), path)
                if pid not in newest or order > newest[pid]:
                    newest[pid] = order
        protected = {order[2] for pid, order in newest.items() if _alive(pid)}
        if self._path is not None:
            protected.add(self._path)
        files.sort()
        deleted: list[Path] = []
        if retention.keep_days is not None:
            cutoff = now - retention.keep_days * 86400
            for mtime, _size, path in files:
                if mtime < cutoff and path not in protected:
                    deleted.append(path)
        if retention.keep_bytes is not None:
            total = sum(size for _m, size, path in files if path not in deleted)
            for _mtime, size, path in files:
                if total <= retention.keep_bytes:
                    break
                if path not in protected and path not in deleted:
                    deleted.append(path)
                    total -= size
        for path in deleted:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return deleted

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class StdoutSink:
    """Writes events as JSON lines to standard output, for a log collector (Fluent Bit,
    Vector, a container runtime's log driver). buttress's own logs go to stderr."""

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self._stream = stream

    def write(self, events: list[Event]) -> None:
        stream = self._stream if self._stream is not None else sys.stdout.buffer
        stream.write(_encode(events))
        stream.flush()

    def close(self) -> None:
        pass


class MemorySink:
    """Keeps events in a list: for tests and the live dashboard."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def write(self, events: list[Event]) -> None:
        self.events.extend(events)

    def close(self) -> None:
        pass


class EventLog:
    def __init__(
        self,
        sinks: list[EventSink],
        *,
        capacity: int = 10_000,
        flush_interval: float = 0.2,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        self.sinks = sinks
        self._buffer: deque[Event] = deque()
        self._capacity = capacity
        self._flush_interval = flush_interval
        self._on_dropped = on_dropped
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        """Events lost: pushed out of a full buffer, or refused by a failing sink."""
        self._deferred_failures: set[str] = set()

    def emit(self, event: Event) -> None:
        """Queue one event; never blocks, never raises."""
        if len(self._buffer) >= self._capacity:
            self._buffer.popleft()
            self._count_dropped(1)
        self._buffer.append(event)

    def _count_dropped(self, n: int) -> None:
        self.dropped += n
        if self._on_dropped is not None:
            self._on_dropped(n)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="events")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            self.flush()

    def flush(self) -> None:
        """Hand everything buffered to the sinks now."""
        if not self._buffer:
            return
        batch = list(self._buffer)
        self._buffer.clear()
        for event in batch:
            value = event.get(DEFERRED_FIELD)
            if type(value) is Deferred:
                event[DEFERRED_FIELD] = self._resolve(value)
        for sink in self.sinks:
            try:
                sink.write(batch)
            except Exception:  # a broken sink must not stop the writer or the others
                log.exception("event sink %r failed; %d events lost to it", sink, len(batch))
                self._count_dropped(len(batch))

    def _resolve(self, deferred: Deferred) -> Any:
        try:
            return deferred()
        except Exception as error:  # the user's summary: log it once per type, keep the event
            kind = type(error).__name__
            if kind not in self._deferred_failures:
                self._deferred_failures.add(kind)
                log.exception("computing an event's %s failed (logged once per error type)",
                              DEFERRED_FIELD)
            return {"error": f"{kind}: {error}"}

    async def aclose(self) -> None:
        """Stop the writer and write what is left: nothing buffered is lost on shutdown."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.flush()
        for sink in self.sinks:
            sink.close()
