"""``buttress demo --stream``: demo orders produced to a Redis Stream at a steady rate, a
``buttress consume`` process answering them, and the lag printed once a second.

The consumer is paused (SIGSTOP) for ``pause_for`` seconds every ``pause_every`` seconds, so
the lag can be watched rising while it is stopped and falling once it is back. The pieces
(:func:`produce`, :func:`start_consumer`) are also what ``bench/streams.py`` measures with.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

import orjson

from buttress.streams.types import Lag
from buttress.streams.urls import open_source, parse_stream_url

ORDERS = "buttress-demo-orders"
DISCOUNTS = "buttress-demo-discounts"
KEEP = 100_000
"""Entries each demo stream keeps (``MAXLEN ~``): the demo runs for as long as you like."""


def stream_urls(redis_url: str, orders: str = ORDERS, answers: str = DISCOUNTS,
                group: str = "demo") -> tuple[str, str]:
    """The source and sink URLs for streams on the Redis at ``redis_url``."""
    where = redis_url.split("://", 1)[1].split("?")[0].rstrip("/")
    host, _, db = where.partition("/")
    base = f"redis-stream://{host}/{db or 0}"
    return (f"{base}/{orders}?group={group}&consumer={group}-1",
            f"{base}/{answers}?maxlen={KEEP}")


def start_consumer(target: str, source: str, sink: str, port: int,
                   env: Mapping[str, str] | None = None, argv_prefix: Sequence[str] = (),
                   ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*argv_prefix, sys.executable, "-m", "buttress.cli", "consume", target, "--source",
         source, "--sink", sink, "--port", str(port)],
        env={**os.environ, **(env or {})})


async def produce(source: str, bodies: Sequence[bytes], rate: float, stop: asyncio.Event,
                  counter: list[int]) -> None:
    """XADD ``bodies`` round-robin at ``rate`` per second (ticks of 50 ms) until ``stop``."""
    from buttress.backends.redis import connect_redis
    from buttress.backends.url import BackendURL

    url = parse_stream_url(source)
    client = connect_redis(BackendURL(url.raw, "redis", url.host, url.port, db=url.db,
                                      options={"timeout": "2s"}))
    cycle = itertools.cycle(bodies)
    started = time.monotonic()
    try:
        while not stop.is_set():
            due = int((time.monotonic() - started) * rate) - counter[0]
            if due > 0:
                async with client.pipeline(transaction=False) as pipe:
                    for _ in range(due):
                        pipe.xadd(url.stream, {"body": next(cycle)}, maxlen=KEEP,
                                  approximate=True)
                    await pipe.execute()
                counter[0] += due
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


def run_stream_demo(target: str, *, rate: float, redis_url: str, port: int,
                    env: Mapping[str, str] | None = None, pause_every: float = 40.0,
                    pause_for: float = 10.0) -> None:
    """Run until Ctrl-C."""
    from buttress.demo.traffic.mix import demo_orders

    source, sink = stream_urls(redis_url)
    bodies = [orjson.dumps(o) for o in demo_orders(seed=7)]
    consumer = start_consumer(target, source, sink, port, env)
    print(f"buttress demo --stream: {rate:.0f} orders/s to {ORDERS}, answers in {DISCOUNTS}; "
          f"consumer metrics on http://127.0.0.1:{port}/metrics; it pauses {pause_for:.0f} s "
          f"every {pause_every:.0f} s", file=sys.stderr)
    try:
        asyncio.run(_watch(consumer, source, bodies, rate, pause_every, pause_for))
    except KeyboardInterrupt:
        pass
    finally:
        consumer.send_signal(signal.SIGCONT)
        consumer.terminate()
        consumer.wait(timeout=30)


async def _watch(consumer: subprocess.Popen[bytes], source: str, bodies: Sequence[bytes],
                 rate: float, pause_every: float, pause_for: float) -> None:
    stop = asyncio.Event()
    produced = [0]
    producer = asyncio.create_task(produce(source, bodies, rate, stop, produced))
    reader = await open_source(source)  # the group's lag only: it never fetches
    started = time.monotonic()
    try:
        while consumer.poll() is None:
            await asyncio.sleep(1.0)
            elapsed = time.monotonic() - started
            paused = pause_every > 0 and elapsed % pause_every > pause_every - pause_for
            consumer.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)
            lag: Lag = await reader.lag()
            print(f"{elapsed:6.0f}s  produced {produced[0]:>8}  lag {lag.behind:>6} messages  "
                  f"oldest {lag.oldest_age_s:6.2f}s{'  (consumer paused)' if paused else ''}",
                  flush=True)
    finally:
        stop.set()
        await producer
        await reader.aclose()
