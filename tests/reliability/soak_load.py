"""A paced, open-loop HTTP/1.1 load for the soak and replica tests.

Requests are scheduled at a fixed rate whatever the server does, so a slow server shows as
latency (measured from the scheduled time), not as a lower rate; every request is counted and
every one is finished before :func:`paced_load` returns. Each carries ``X-Request-Id:
<prefix>-<n>``, so a test can find exactly its requests in the server's events.

Why not httpx: on a shared 2-core machine every µs of client CPU is taken from the server, and
at ~1,000 requests/s a general-purpose client's per-request work adds up; this one writes the
request bytes and parses the status line and headers itself (about 200 µs of CPU a request
measured here, asyncio streams on the default loop). Why not wrk (used for the capacity
burst): it stops mid-flight at its deadline, so requests in flight are neither counted nor
finished, and it cannot hand each answer's headers to the test.

A client that falls more than :data:`MAX_BACKLOG` seconds behind its schedule (the test
process starved on a shared machine) skips the backlog rather than fire it at once, and counts
what it skipped: a burst of catch-up requests would measure the client's stall, not the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_BACKLOG = 1.0
"""Seconds the schedule may run behind before the backlog is skipped."""
REQUEST_TIMEOUT = 10.0
"""A request not answered within this is a transport error."""
KEEPALIVE_EXPIRY = 4.0
"""Seconds a connection may sit idle before it is opened anew rather than reused: under the
server's keep-alive timeout (uvicorn's 5 s), as httpx's ``keepalive_expiry`` (5 s) is under
common servers' timeouts. At a low rate (a starved machine halves the measured capacity) each
of the connections idles longer than that, and a request written to a connection the server
has just closed is a transport error that no server fault caused."""


@dataclass(frozen=True)
class Answer:
    """One request: times from ``time.monotonic()``; ``status`` 0 for a transport error."""

    n: int
    scheduled: float
    sent: float
    received: float
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def version(self) -> str:
        return self.headers.get("x-model-version", "")

    @property
    def fallback(self) -> str:
        return self.headers.get("x-fallback", "")


@dataclass
class Tally:
    """What a load got back: counts by status (0 = transport error) and by ``X-Fallback``,
    latencies from the scheduled time (the client's queue included) in ms."""

    sent: int = 0
    skipped: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    fallbacks: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def answered(self) -> int:
        """Requests that got an HTTP answer (any status)."""
        return sum(count for status, count in self.statuses.items() if status)

    @property
    def transport_errors(self) -> int:
        return self.statuses[0]

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)

    @property
    def healthy(self) -> int:
        """2xx answers with no fallback: the whole pipeline ran."""
        ok = sum(count for status, count in self.statuses.items() if 200 <= status < 300)
        return ok - sum(self.fallbacks.values())

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def quantile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class Connection:
    """One keep-alive HTTP/1.1 connection, one request at a time; reconnects after an error."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._idle_since = 0.0

    async def exchange(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        if self._writer is not None and time.monotonic() - self._idle_since > KEEPALIVE_EXPIRY:
            await self.close()
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(raw)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:  # /predict always sends one; nothing else here
            raise ConnectionError(f"no content-length in an answer: {headers}")
        body = await self._reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        self._idle_since = time.monotonic()
        return status, headers, body

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def request_bytes(host: str, body: bytes, request_id: str, path: str = "/predict") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-Id: {request_id}\r\n\r\n"
            ).encode() + body


async def paced_load(
    base_url: str,
    bodies: Sequence[bytes],
    *,
    rate: float,
    connections: int,
    prefix: str,
    seconds: float | None = None,
    stop: asyncio.Event | None = None,
    on_answer: Callable[[Answer], None] | None = None,
) -> Tally:
    """``rate`` requests/s to ``base_url``/predict, cycling through ``bodies``, for ``seconds``
    or until ``stop`` is set; returns once every request sent has its answer or its error."""
    if seconds is None and stop is None:
        raise ValueError("give seconds or a stop event")
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    tally = Tally()
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()

    async def worker() -> None:
        connection = Connection(host, port)
        try:
            while (item := await queue.get()) is not None:
                n, scheduled = item
                raw = request_bytes(host, bodies[n % len(bodies)], f"{prefix}-{n}")
                sent = time.monotonic()
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        status, headers, body = await connection.exchange(raw)
                except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError,
                        asyncio.LimitOverrunError, ValueError):
                    await connection.close()
                    status, headers, body = 0, {}, b""
                received = time.monotonic()
                tally.statuses[status] += 1
                if headers.get("x-fallback"):
                    tally.fallbacks[headers["x-fallback"]] += 1
                tally.latencies_ms.append((received - scheduled) * 1000)
                if on_answer is not None:
                    on_answer(Answer(n, scheduled, sent, received, status, headers, body))
        finally:
            await connection.close()

    workers = [asyncio.ensure_future(worker()) for _ in range(connections)]
    started = origin = time.monotonic()
    ends = None if seconds is None else started + seconds
    n = k = 0  # requests sent; requests scheduled since ``origin``
    try:
        while not (stop is not None and stop.is_set()):
            now = time.monotonic()
            if ends is not None and now >= ends:
                break
            due = origin + k / rate
            if now - due > MAX_BACKLOG:  # starved: skip the backlog, do not burst it
                tally.skipped += int((now - due) * rate)
                origin, k = now, 0
                continue
            if due > now:
                await asyncio.sleep(due - now)
                continue
            queue.put_nowait((n, due))
            n += 1
            k += 1
    finally:
        tally.sent = n
        tally.seconds = time.monotonic() - started  # the schedule's length, not the drain
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
    return tally


DEMO_GUARDRAILS = ("discount_value_per_minute", "discounted_orders_per_user_per_hour")


async def lift_demo_guardrails(base_url: str, token: str) -> None:
    """Raise the demo's guardrails out of reach (admin API), as bench/overload.py does: a load
    that spends the demo's budgets after a few seconds would change what it measures half-way.
    They are still evaluated on every request."""
    import httpx

    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        for name in DEMO_GUARDRAILS:
            response = await http.post(f"/admin/guardrails/{name}", json={"limit": 1e9},
                                       headers={"Authorization": f"Bearer {token}"})
            response.raise_for_status()
