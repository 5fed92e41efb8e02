"""Feature look-up latency: a 10-id ``get_many`` per backend, p50/p99 over many calls.

    python bench/features_lookup.py [--calls 3000] [--redis redis://127.0.0.1:6379/0]

Each backend gets 10,000 users; every call asks for 10 random ids, one of them unknown, so
the defaults path is measured too. Redis keys live in a namespace of their own and are deleted
at the end. Numbers are wall-clock per call on one event loop (no concurrency).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid

from buttress.backends import Connections
from buttress.features import FeatureStore, FeatureTable

USER = FeatureTable(
    entity="user", defaults={"orders_count": 0, "return_rate": 0.0, "segment": "new"}
)
USERS = 10_000
IDS_PER_CALL = 10


async def measure(url: str, calls: int, rng: random.Random) -> list[float]:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    connections = Connections()
    store = FeatureStore(url, [USER], namespace=namespace)
    await store.open(connections)
    try:
        await store.put_many(
            "user",
            {
                i: {"orders_count": i % 50, "return_rate": (i % 7) / 10, "segment": "s"}
                for i in range(USERS)
            },
        )
        batches = [[*rng.sample(range(USERS), IDS_PER_CALL - 1), "unknown"] for _ in range(calls)]
        for ids in batches[:100]:  # warm up connections, statement cache, code paths
            await store.get_many("user", ids)
        timings = []
        for ids in batches:
            started = time.perf_counter()
            await store.get_many("user", ids)
            timings.append(time.perf_counter() - started)
        return timings
    finally:
        if store.url.is_redis:
            client = connections.redis(store.url)
            keys = [k async for k in client.scan_iter(match=f"buttress:{{{namespace}}}:*")]
            for start in range(0, len(keys), 1000):
                await client.delete(*keys[start : start + 1000])
        await connections.aclose()


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        backends = {"memory": "memory://", "sqlite": f"sqlite:///{tmp}/f.db", "redis": args.redis}
        print(f"{IDS_PER_CALL}-id get_many, {args.calls} calls each, microseconds per call")
        print(f"{'backend':<8} {'p50':>8} {'p99':>8} {'mean':>8} {'calls/s':>9}")
        for name, url in backends.items():
            timings = await measure(url, args.calls, rng)
            p50, p99 = percentile(timings, 0.5), percentile(timings, 0.99)
            mean = statistics.fmean(timings)
            print(f"{name:<8} {p50 * 1e6:8.1f} {p99 * 1e6:8.1f} {mean * 1e6:8.1f} {1 / mean:9.0f}")


if __name__ == "__main__":
    asyncio.run(main())
