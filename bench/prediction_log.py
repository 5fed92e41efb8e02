"""What logging every prediction costs: the demo at 64 connections with prediction summaries
on every clean success (``log_sample_rate = 1``, the default) and on none of them (``0``;
fallbacks and errors are always summarized), alternated round by round.

    .venv/bin/python bench/prediction_log.py [--rounds 3] [--duration 8] [--connections 64]

Server on core 0, wrk on core 1, varied demo orders (``harness.varied_orders``). Prints
req/s, the share of healthy answers and the server's CPU per request (all its threads, from
/proc: the column that moves least on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Server, counting_script, cpu_seconds, varied_orders, wrk_counting

DEMO = [sys.executable, "-m", "buttress.cli", "serve", "buttress.demo.service:svc",
        "--port", "{port}"]
ADMIN_TOKEN = "bench"
GUARDRAILS = ("discount_value_per_minute", "discounted_orders_per_user_per_hour")


def run(sample_rate: str, script: str, connections: int, duration: float) -> tuple[
        float, float, float]:
    env = {"BUTTRESS_ADMIN_TOKEN": ADMIN_TOKEN, "BUTTRESS_LOG_SAMPLE_RATE": sample_rate}
    with Server(DEMO, env=env) as server:
        for name in GUARDRAILS:
            httpx.post(f"{server.url}/admin/guardrails/{name}", json={"limit": 1e9},
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).raise_for_status()
        wrk_counting("warm-up", server.url, script, connections=connections, duration=2)
        cpu = cpu_seconds(server.process.pid)
        counted = wrk_counting(f"sample {sample_rate}", server.url, script,
                               connections=connections, duration=duration)
        cpu = cpu_seconds(server.process.pid) - cpu
    return counted.rate(), counted.healthy_share, 1e6 * cpu / max(counted.total, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    script = counting_script(varied_orders())
    results: dict[str, list[tuple[float, float, float]]] = {"1": [], "0": []}
    try:
        for _ in range(args.rounds):
            for rate in ("0", "1"):
                results[rate].append(run(rate, script, args.connections, args.duration))
    finally:
        os.unlink(script)
    print(f"| log_sample_rate | req/s (median of {args.rounds}) | healthy share | "
          "CPU µs/req (median) |\n|---|---:|---:|---:|")
    for rate, runs in results.items():
        print(f"| {rate} | {statistics.median(r[0] for r in runs):,.0f} | "
              f"{min(r[1] for r in runs):.0%} | {statistics.median(r[2] for r in runs):.0f} |")
    on, off = (statistics.median(r[2] for r in results[k]) for k in ("1", "0"))
    rps_on, rps_off = (statistics.median(r[0] for r in results[k]) for k in ("1", "0"))
    print(f"\nlogging every prediction: CPU per request {on / off - 1:+.1%}, "
          f"req/s {rps_on / rps_off - 1:+.1%}")


if __name__ == "__main__":
    main()
