"""Request ids: the client's ``X-Request-Id`` when it is well-formed, else one of ours.

Ours are random per process, then a counter: cheaper than ``urandom`` per request, and still
unique across workers and replicas.
"""

from __future__ import annotations

import itertools
import os
import re

# fullmatch, not ``^...$``: ``$`` also matches before a final newline, which would let
# ``b"id\n"`` through into logs and response headers
WELL_FORMED = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")


class RequestIds:
    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count()

    def pick(self, given: bytes | None) -> str:
        """``given`` (a header's raw value) if it is a well-formed id, else a new one."""
        if given and WELL_FORMED.fullmatch(given):
            return given.decode()
        return f"{self._prefix}{next(self._counter):012x}"
