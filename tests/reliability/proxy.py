"""A small fault-injecting TCP proxy: what ``tc netem`` would do, without the kernel module.

It listens on a loopback port and forwards every connection to an upstream port. While its
delay is above 0, each chunk read from either side is written to the other that many seconds
after it arrived (order kept, nothing lost): a slow network, or a server that answers late,
as the client sees it.

It runs as a process of its own (``python -m tests.reliability.proxy LISTEN UPSTREAM``), so
that neither the load generator nor a blocking call in the test delays the traffic it
carries; the test sets the delay by writing seconds, one line at a time, to its stdin
(:class:`DelayProxy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import free_port, wait_for_port

CHUNK = 65536
REPO = Path(__file__).resolve().parents[2]


class Forwarder:
    """The proxy itself: one pair of pumps per connection, ``delay`` read per chunk."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.delay = 0.0

    async def accept(self, client_r: asyncio.StreamReader,
                     client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:  # upstream down: the client sees its connection closed
            client_w.close()
            return
        pumps = [asyncio.ensure_future(self.pump(client_r, server_w)),
                 asyncio.ensure_future(self.pump(server_r, client_w))]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        for writer in (client_w, server_w):
            writer.close()

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it arrived."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    return
                writer.write(data)
                await writer.drain()

        delivering = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(CHUNK)
                queue.put_nowait((loop.time() + self.delay, data))
                if not data:
                    break
            await delivering
        except OSError:  # either side went away: accept() closes the other
            pass
        finally:
            delivering.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await delivering

    async def follow(self, control: asyncio.StreamReader) -> None:
        """Read delays (seconds, one a line) until the controlling test closes stdin."""
        while line := await control.readline():
            self.delay = float(line)


async def serve(listen: int, upstream: int) -> None:
    forwarder = Forwarder(upstream)
    server = await asyncio.start_server(forwarder.accept, "127.0.0.1", listen)
    loop = asyncio.get_running_loop()
    control = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(control), sys.stdin)
    async with server:
        await forwarder.follow(control)


@dataclass
class DelayProxy:
    """The proxy process, controlled from the test."""

    upstream: int
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.proxy", str(self.port), str(self.upstream)],
            cwd=REPO, stdin=subprocess.PIPE)
        wait_for_port(self.port)

    def delay(self, seconds: float) -> None:
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write(f"{seconds}\n".encode())
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2])))
