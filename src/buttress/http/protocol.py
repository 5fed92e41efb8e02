"""The HTTP connection: uvicorn's httptools protocol with a bound on reading and on connections.

uvicorn bounds only the idle time between two requests of a keep-alive connection
(``timeout_keep_alive``). A connection that never sends a byte, headers sent one byte a
second, or a body trickled slowly were all held for as long as the client liked, and
every one of them kept a socket, a file descriptor and memory: 3,000 such clients were all
held. This subclass adds, per connection:

* **a read deadline** (``read_timeout``): from the moment the connection opens, or from the
  first byte of a later request, the whole request (headers and body) must arrive within it.
  A timer is armed only when a read ends with the request still incomplete, so a request that
  arrives in one piece (nearly all of them) pays a few attribute reads and no timer. When it
  fires with the headers read and the response not started, the app is woken with what was
  read and a flag in the scope (:data:`READ_TIMED_OUT`), answers 408 and the connection
  closes; otherwise the connection is closed at once.
* **a cap on open connections** (``max_connections``): one past the cap is closed as soon as
  it is accepted, before it can hold anything.

Both are counted in ``buttress_connections_closed_total{reason}``. Written here because
uvicorn has neither (its ``limit_concurrency`` answers 503 to requests, but only once their
headers have arrived, so silent connections still pile up).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from buttress.http.app import ButtressApp
from buttress.http.body import READ_TIMED_OUT

ANSWER_GRACE = 1.0
"""Seconds the app has to answer a request whose read timed out before the connection closes."""


class BoundedHttpProtocol(HttpToolsProtocol):
    """See the module docstring. Settings and the metric come from the app uvicorn serves."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = _limits_of(self.app)
        self._read_timeout, self._max_connections, self._closed = limits
        self._read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            self._closed("max_connections")
            transport.close()
            return
        self._read_timer = self.loop.call_later(self._read_timeout, self._read_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        HttpToolsProtocol.data_received(self, data)  # not super(): this runs every request
        # Incomplete: no request's headers yet, a new request's headers begun (the parser
        # made its scope, no cycle has it yet), or the body still arriving. uvicorn's own
        # state says it, so the parser callbacks need no overriding.
        cycle = self.cycle
        if cycle is None or cycle.more_body or cycle.scope is not self.scope:
            if self._read_timer is None:
                self._read_timer = self.loop.call_later(self._read_timeout,
                                                        self._read_timed_out)
        elif self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        self._closed("read_timeout")
        cycle = self.cycle
        if (cycle is not None and cycle.scope is self.scope and not cycle.response_started
                and not cycle.disconnected):
            # Headers read, body incomplete, app waiting for it: hand it what arrived, flagged,
            # so it answers 408 itself (and records the request); then close in any case.
            self.scope.setdefault("extensions", {})[READ_TIMED_OUT] = {}
            cycle.more_body = False
            cycle.keep_alive = False
            cycle.message_event.set()
            self._read_timer = self.loop.call_later(ANSWER_GRACE, self.transport.close)
            return
        self.transport.close()


def _limits_of(app: Any) -> tuple[float, int, Callable[[str], None]]:
    """(read timeout, max connections, count-closed callback) of the buttress app inside
    whatever middleware uvicorn wrapped it in."""
    for _ in range(8):
        if isinstance(app, ButtressApp):
            settings = app.runtime.settings
            return (settings.read_timeout, settings.max_connections,
                    app.runtime.metrics.count_connection_closed)
        app = getattr(app, "app", None)
    raise TypeError("BoundedHttpProtocol serves a buttress app only")
