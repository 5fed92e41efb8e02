"""``/predict`` on the discount demo vs a raw Starlette endpoint calling the same model.

    .venv/bin/python bench/http_predict.py [--duration 10] [--connections 16,64]

Server on core 0, wrk on core 1 (taskset). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
    "buttress": ([PY, "-m", "buttress.cli", "serve", "examples/discount/service.py:svc",
                  "--port", "{port}"], "/readyz"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", default="16")
    args = parser.parse_args()
    results: list[Result] = []
    for name, (argv, ready) in SCENARIOS.items():
        with Server(argv, ready_path=ready) as server:
            for conns in map(int, args.connections.split(",")):
                wrk(name, server.url + "/predict", BODY, connections=conns, duration=2)  # warm
                results.append(wrk(name, server.url + "/predict", BODY, connections=conns,
                                   duration=args.duration))
    print(table(results, baseline="raw starlette"))


if __name__ == "__main__":
    main()
