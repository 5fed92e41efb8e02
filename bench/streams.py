"""Stream input: messages/s through ``buttress consume`` on Redis Streams vs the same demo's
``/predict`` at 64 connections, then the lag's recovery after the consumer stops for 30 s.

    .venv/bin/python bench/streams.py
    .venv/bin/python bench/streams.py --messages 20000 --stop 30 --rate-share 0.5

The discount demo on its embedded defaults (features in SQLite), server and consumer pinned to
core 0, wrk and the producer to core 1 (``harness.py``); Redis runs where the OS puts it. The
same 2,000 varied orders feed both (``harness.varied_orders``); guardrails are left as declared in
both, and the share of answers with a fallback is read from each process's events.

1. ``/predict``: wrk, 64 connections, 3 s warm-up then ``--duration`` seconds.
2. ``consume``: ``--messages`` orders put in a stream first, then one consumer with
   ``--max-in-flight 64`` started; messages/s = messages / (time from ready to lag 0).
3. Recovery: a producer at ``--rate-share`` x the measured consume throughput, 10 s steady,
   the consumer stopped (SIGSTOP) for ``--stop`` s, then continued: the time until the lag is
   back under 0.1 s worth of messages, against ``stop x rate / (capacity - rate)`` with the
   capacity measured in step 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import (
    LOAD_CPU,
    SERVER_CPU,
    Server,
    counting_script,
    free_port,
    pinned,
    varied_orders,
    wrk_counting,
)

from buttress.streams.demo import produce
from buttress.streams.urls import open_source

PY = sys.executable
TARGET = "buttress.demo.service:svc"
ROOT = Path(__file__).resolve().parents[1]
REDIS = "127.0.0.1:6379"


def fallback_share(events_dir: Path) -> float:
    time.sleep(1.5)  # the event writer flushes in the background
    total = degraded = 0
    for path in events_dir.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event.get("kind", "request") != "request" or event["request_id"] == "warm-up":
                continue
            total += 1
            degraded += bool(event["fallbacks"])
    return degraded / max(total, 1)


def predict_run(lua: str, duration: float, tmp: str) -> tuple[float, float]:
    env = {"BUTTRESS_FEATURES_URL": f"sqlite:///{tmp}/features.db"}
    with Server([PY, "-m", "buttress.cli", "serve", TARGET, "--port", "{port}"],
                env=env) as server:
        wrk_counting("warm-up", server.url, lua, connections=64, duration=3)
        run = wrk_counting("predict", server.url, lua, connections=64, duration=duration)
        share = fallback_share(Path(server.tmp.name) / "events")
    return run.rate(run.total), share


class Consumer:
    """``buttress consume`` on the demo, pinned to the server core."""

    def __init__(self, stream: str, tmp: str) -> None:
        self.port = free_port()
        self.events = Path(tmp) / f"events-{stream}"
        self.source = f"redis-stream://{REDIS}/0/{stream}?group=bench&consumer=bench-1"
        self.sink = f"redis-stream://{REDIS}/0/{stream}-answers"
        env = {**os.environ, "BUTTRESS_FEATURES_URL": f"sqlite:///{tmp}/features.db",
               "BUTTRESS_EVENTS_DIR": str(self.events), "BUTTRESS_LOG_LEVEL": "warning"}
        self.process = subprocess.Popen(
            pinned(SERVER_CPU, [PY, "-m", "buttress.cli", "consume", TARGET, "--source",
                                self.source, "--sink", self.sink, "--port", str(self.port),
                                "--max-in-flight", "64"]), cwd=ROOT, env=env)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError("the consumer was not ready")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        self.process.wait(timeout=30)


async def cleanup(*streams: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(f"redis://{REDIS}/0")
    await client.delete(*streams, *(f"{s}-answers" for s in streams),
                        *(f"{s}-answers-dead-letters" for s in streams))
    await client.aclose()


async def fill(stream: str, bodies: list[str], n: int) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(f"redis://{REDIS}/0")
    for start in range(0, n, 1000):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(n, start + 1000)):
                pipe.xadd(stream, {"body": bodies[i % len(bodies)]})
            await pipe.execute()
    await client.aclose()


async def drain_time(source_url: str, started: float) -> float:
    source = await open_source(source_url)
    try:
        while (await source.lag()).behind > 0:  # noqa: ASYNC110 -- polling the broker
            await asyncio.sleep(0.05)
    finally:
        await source.aclose()
    return time.monotonic() - started


def consume_run(bodies: list[str], n: int, tmp: str) -> tuple[float, float]:
    stream = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(fill(stream, bodies, n))
        consumer = Consumer(stream, tmp)
        started = time.monotonic()
        try:
            seconds = asyncio.run(drain_time(consumer.source, started))
        finally:
            consumer.stop()
        return n / seconds, fallback_share(consumer.events)
    finally:
        asyncio.run(cleanup(stream))


async def recovery(consumer: Consumer, bodies: list[bytes], rate: float, stop_s: float,
                   ) -> tuple[float, int]:
    """Seconds from the consumer's continue until the lag is under 0.1 s of messages, and
    the peak lag."""
    halt = asyncio.Event()
    producer = asyncio.create_task(produce(consumer.source, bodies, rate, halt, [0]))
    source = await open_source(consumer.source)
    try:
        await asyncio.sleep(10)
        consumer.process.send_signal(signal.SIGSTOP)
        await asyncio.sleep(stop_s)
        peak = (await source.lag()).behind
        consumer.process.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        while (lag := await source.lag()).behind > max(rate * 0.1, 1):
            peak = max(peak, lag.behind)
            await asyncio.sleep(0.1)
        return time.monotonic() - resumed, peak
    finally:
        halt.set()
        await producer
        await source.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--stop", type=float, default=30.0)
    parser.add_argument("--rate-share", type=float, default=0.5)
    args = parser.parse_args()
    bodies = varied_orders()
    os.sched_setaffinity(0, {int(LOAD_CPU)})  # the producer and the lag reader
    with tempfile.TemporaryDirectory(prefix="buttress-streams-") as tmp:
        lua = counting_script(bodies)
        try:
            predict_rps, predict_fallbacks = predict_run(lua, args.duration, tmp)
        finally:
            os.unlink(lua)
        consume_mps, consume_fallbacks = consume_run(bodies, args.messages, tmp)
        print("| path | answers/s | with a fallback |\n|---|---:|---:|")
        print(f"| /predict, wrk 64 connections, {args.duration:.0f} s | {predict_rps:,.0f} | "
              f"{predict_fallbacks:.1%} |")
        print(f"| consume, Redis Streams, {args.messages} messages, 64 in flight | "
              f"{consume_mps:,.0f} | {consume_fallbacks:.1%} |")
        print(f"\nconsume / predict: {consume_mps / predict_rps:.2f}x")
        rate = args.rate_share * consume_mps
        stream = f"bench-{uuid.uuid4().hex[:8]}"
        try:
            consumer = Consumer(stream, tmp)
            try:
                seconds, peak = asyncio.run(recovery(consumer, [b.encode() for b in bodies],
                                                     rate, args.stop))
            finally:
                consumer.stop()
        finally:
            asyncio.run(cleanup(stream))
        ideal = args.stop * rate / (consume_mps - rate)
        print(f"\nrecovery: producer at {rate:,.0f} msg/s ({args.rate_share:.0%} of capacity), "
              f"consumer stopped {args.stop:.0f} s: peak lag {peak:,} messages, back under "
              f"0.1 s of messages {seconds:.1f} s after it continued (ideal {ideal:.1f} s)")


if __name__ == "__main__":
    main()
