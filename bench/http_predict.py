"""``/predict`` on the discount demo vs a raw Starlette endpoint calling the same model.

    .venv/bin/python bench/http_predict.py [--duration 10] [--connections 16,64]

Server on core 0, wrk on core 1 (taskset). Requests are varied demo orders (known users and
products, 1 to 5 sub-orders each; ``harness.varied_orders``); the table gives the share of
healthy answers (no fallback) next to each throughput. Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Counted, Server, counting_script, varied_orders, wrk_counting

PY = sys.executable
UVICORN = [PY, "-m", "uvicorn", "--port", "{port}", "--loop", "uvloop", "--http", "httptools",
           "--no-access-log", "--log-level", "warning"]
SCENARIOS = {
    "raw starlette": ([*UVICORN, "bench.baseline_app:app"], "/readyz"),
    "buttress": ([PY, "-m", "buttress.cli", "serve", "buttress.demo.service:svc",
                  "--port", "{port}"], "/readyz"),
}
ADMIN_TOKEN = "bench"
# lift the demo's guardrails so the run measures predictions, not the default-prediction path
# of an exhausted budget
GUARDRAILS = ("discount_value_per_minute", "discounted_orders_per_user_per_hour")


def lift_guardrails(url: str) -> None:
    for name in GUARDRAILS:
        httpx.post(f"{url}/admin/guardrails/{name}", json={"limit": 1e9},
                   headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", default="16,64")
    args = parser.parse_args()
    script = counting_script(varied_orders())
    results: list[Counted] = []
    try:
        for name, (argv, ready) in SCENARIOS.items():
            env = {"BUTTRESS_ADMIN_TOKEN": ADMIN_TOKEN}
            with Server(argv, env=env, ready_path=ready) as server:
                if name != "raw starlette":
                    lift_guardrails(server.url)
                for conns in map(int, args.connections.split(",")):
                    wrk_counting(name, server.url, script, connections=conns, duration=2)
                    results.append(wrk_counting(name, server.url, script, connections=conns,
                                                duration=args.duration))
    finally:
        os.unlink(script)
    base = {r.connections: r.rate() for r in results if r.name == "raw starlette"}
    print("| scenario | conns | req/s | healthy share | ratio vs raw starlette | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r.name} | {r.connections} | {r.rate():,.0f} | {r.healthy_share:.0%} | "
              f"{r.rate() / base[r.connections]:.2f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} |")
    print("\nhealthy: a 2xx without X-Fallback (raw Starlette has no fallbacks: all of its 2xx "
          "count).")


if __name__ == "__main__":
    main()
