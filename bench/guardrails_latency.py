"""Latency a guardrail check adds per request: memory, Redis one by one, Redis batched.

Two guardrails as in the demo (a global sliding window on discount value, a fixed window on
orders per user over 10,000 users), limits high enough that every request is admitted (the
common path). Prints p50/p99 in microseconds per request; a batched call's time is divided by
its size, since that is what each request in it pays. Wall-clock percentiles include the wait
for Redis (and, on a busy machine, for the CPU); the last column is this process's mean CPU
per request, the part that counts against the per-request budget in PERFORMANCE.md.

    .venv/bin/python bench/guardrails_latency.py [--redis redis://127.0.0.1:6379/0] [--no-redis]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

from buttress.backends import Connections
from buttress.guardrails import FixedWindow, Guardrails, SlidingWindow

BATCH = 64


def discount_value(request: dict[str, Any], prediction: float) -> float:
    return float(request["price"]) * prediction / 100


def user_of(request: dict[str, Any]) -> str:
    return str(request["user"])


GUARDS = [
    SlidingWindow("discount_value", 1e9, "1min", measure=discount_value),
    FixedWindow("orders_per_user", 1e6, "1h", key=user_of),
]


def requests(n: int, seed: int = 1) -> list[tuple[dict[str, Any], float]]:
    rng = random.Random(seed)
    return [
        ({"user": rng.randrange(10_000), "price": rng.uniform(1, 500)}, rng.uniform(0, 15))
        for _ in range(n)
    ]


Samples = tuple[list[float], float]
"""Wall-clock microseconds per request for each call, and mean client CPU per request."""


async def per_call(g: Guardrails, items: Sequence[tuple[Any, Any]]) -> Samples:
    samples = []
    cpu = time.process_time_ns()
    for request, prediction in items:
        started = time.perf_counter_ns()
        await g.admit(request, prediction)
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples, (time.process_time_ns() - cpu) / 1000 / len(items)


async def per_batch(g: Guardrails, items: Sequence[tuple[Any, Any]]) -> Samples:
    samples = []
    cpu = time.process_time_ns()
    for start in range(0, len(items) - BATCH + 1, BATCH):
        batch = items[start : start + BATCH]
        started = time.perf_counter_ns()
        await g.admit_many(batch)
        samples.append((time.perf_counter_ns() - started) / 1000 / BATCH)
    return samples, (time.process_time_ns() - cpu) / 1000 / len(items)


def row(label: str, measured: Samples) -> str:
    samples, cpu = measured
    cuts = statistics.quantiles(samples, n=100)
    return (
        f"| {label:<38} | {len(samples):>7} | {cuts[49]:>8.1f} | {cuts[98]:>8.1f} | {cpu:>10.1f} |"
    )


async def main(redis_url: str | None) -> None:
    rows = []
    memory = Guardrails(GUARDS, "memory://")
    await memory.open()
    await per_call(memory, requests(2_000, seed=0))  # warm up
    rows.append(row("memory, admit()", await per_call(memory, requests(20_000))))
    rows.append(
        row(f"memory, admit_many({BATCH}) per request", await per_batch(memory, requests(64_000)))
    )
    if redis_url is not None:
        connections = Connections()
        namespace = f"bench-guardrails-{random.randrange(1 << 32):08x}"
        remote = Guardrails(GUARDS, redis_url, namespace)
        await remote.open(connections)
        try:
            await per_call(remote, requests(300, seed=0))
            rows.append(
                row("redis, admit() (one round trip each)", await per_call(remote, requests(3_000)))
            )
            rows.append(
                row(
                    f"redis, admit_many({BATCH}) per request",
                    await per_batch(remote, requests(64 * 500)),
                )
            )
        finally:
            client = connections.redis(redis_url)
            keys = [k async for k in client.scan_iter(match=f"buttress:{{{namespace}}}:*")]
            if keys:
                await client.delete(*keys)
            await connections.aclose()
    print("| guardrail check (2 guardrails)         |   calls |  p50 us  |  p99 us  | cpu us/req |")
    print("|----------------------------------------|---------|----------|----------|------------|")
    print("\n".join(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(None if args.no_redis else args.redis))
