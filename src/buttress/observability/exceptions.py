"""One event per caught exception, with the traceback only when it says something new.

A failing dependency raises the same error on every request: thousands of identical
tracebacks a second would drown the events they are meant to explain, and formatting one
costs ~50 µs. So every caught exception gets its event (category, stage, type, message) but
only the first of a distinct error (stage + exception type) within ``traceback_interval``
carries the traceback; the next one that does also says how many were seen without one.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from typing import Any

from buttress.observability.events import SCHEMA_VERSION, Event

TRACEBACK_INTERVAL = 10.0
"""A distinct error's traceback is written at most this often; in between, one line each."""
MAX_MESSAGE_CHARS = 1000
MAX_DISTINCT_ERRORS = 1000
"""Distinct (stage, type) pairs remembered; past that the memory starts afresh."""


class ExceptionEvents:
    def __init__(self, service: str, emit: Callable[[Event], None], *,
                 traceback_interval: float = TRACEBACK_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self._emit = emit
        self.traceback_interval = traceback_interval
        self._clock = clock
        self._seen: dict[tuple[str, str], list[Any]] = {}
        """(stage, type) -> [time of the last traceback, exceptions since without one]."""
        self._pid = os.getpid()

    def record(self, stage: str, category: str, error: BaseException,
               request_id: str | None = None) -> Event:
        """Emit (and return) the event of one caught exception."""
        kind = type(error).__name__
        key = (stage, kind)
        now = self._clock()
        seen = self._seen.get(key)
        with_traceback = seen is None or now - seen[0] >= self.traceback_interval
        suppressed = 0
        if seen is None:
            if len(self._seen) >= MAX_DISTINCT_ERRORS:
                self._seen.clear()
            self._seen[key] = [now, 0]
        elif with_traceback:
            suppressed, seen[0], seen[1] = seen[1], now, 0
        else:
            seen[1] += 1
        message = str(error)
        event: Event = {
            "v": SCHEMA_VERSION,
            "kind": "exception",
            "ts": time.time(),
            "service": self.service,
            "request_id": request_id,
            "stage": stage,
            "category": str(category),
            "error_type": kind,
            "message": message[:MAX_MESSAGE_CHARS],
            "traceback": ("".join(traceback.format_exception(error)) if with_traceback
                          else None),
            "suppressed_tracebacks": suppressed,
            "pid": self._pid,
        }
        self._emit(event)
        return event
