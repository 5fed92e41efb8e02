"""``/predict`` on the discount demo vs a raw Starlette endpoint calling the same model.

    .venv/bin/python bench/http_predict.py [--duration 10] [--connections 16,64]

Server on core 0, wrk on core 1 (taskset). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Result, Server, table, wrk

BODY = json.dumps({
    "order_id": "o-1", "user": {"id": 42, "app_version": "5.12.0"},
    "sub_orders": [{"sub_order_id": "so-1", "product_id": 501, "price": 499.0,
                    "margin": 0.18, "quantity": 1}]})
PY = sys.executable
UVICORN = [PY, "-m", "uvicorn", "--port", "{port}", "--loop", "uvloop", "--http", "httptools",
           "--no-access-log", "--log-level", "warning"]
SCENARIOS = {
    "raw starlette": ([*UVICORN, "bench.baseline_app:app"], "/readyz"),
    "buttress": ([PY, "-m", "buttress.cli", "serve", "buttress.demo.service:svc",
                  "--port", "{port}"], "/readyz"),
}
ADMIN_TOKEN = "bench"
# wrk sends one order (user 42) again and again: lift the demo's guardrails so the run
# measures predictions, not the default-prediction path of an exhausted budget
GUARDRAILS = ("discount_value_per_minute", "discounted_orders_per_user_per_hour")


def lift_guardrails(url: str) -> None:
    for name in GUARDRAILS:
        httpx.post(f"{url}/admin/guardrails/{name}", json={"limit": 1e9},
                   headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).raise_for_status()


def fallbacks(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("buttress_fallbacks_total{"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", default="16")
    args = parser.parse_args()
    results: list[Result] = []
    served_fallbacks: dict[str, float] = {}
    for name, (argv, ready) in SCENARIOS.items():
        env = {"BUTTRESS_ADMIN_TOKEN": ADMIN_TOKEN}
        with Server(argv, env=env, ready_path=ready) as server:
            if name != "raw starlette":
                lift_guardrails(server.url)
                before = fallbacks(server.url)
            for conns in map(int, args.connections.split(",")):
                wrk(name, server.url + "/predict", BODY, connections=conns, duration=2)  # warm
                results.append(wrk(name, server.url + "/predict", BODY, connections=conns,
                                   duration=args.duration))
            if name != "raw starlette":
                served_fallbacks[name] = fallbacks(server.url) - before
    print(table(results, baseline="raw starlette"))
    for name, count in served_fallbacks.items():
        print(f"\n{name}: {count:.0f} fallbacks served during the runs (warm-up included)")


if __name__ == "__main__":
    main()
