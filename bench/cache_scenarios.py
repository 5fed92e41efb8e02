"""What the response and stage caches buy, in one run on one machine.

    .venv/bin/python bench/cache_scenarios.py [--duration 8] [--connections 16] \
        [--stage-connections 1,16]

(a) Module level: the raw Starlette baseline vs the buttress demo without a cache vs the demo
    with a response cache on the hit path (wrk sends the same body every time, so after the
    first request every answer is a hit). Both demo variants keep their guardrails, with the
    limits raised so none refuses (``bench/services/cached_discount.py``).
(b) Sub-module level: a service whose feature stage costs ~2 ms, without and with a stage
    cache keyed by user only (the same body again: no response cache, so the model runs on
    every request; only the feature look-up is saved).

Server on core 0, wrk on core 1 (taskset, see ``harness.py``). Each scenario is warmed up for
2 s before it is measured. Prints Markdown tables with ratios against the baselines of the same
run, the server CPU per request where the server core is saturated (``1e6 / req/s``), and
the p50/p99 latency the stage cache saved.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Result, Server, table, wrk
from http_predict import BODY, UVICORN

PY = sys.executable
SERVE = [PY, "-m", "buttress.cli", "serve"]
STAGE_BODY = json.dumps({"user": 42, "x": 0.5})

MODULE = {
    "raw starlette": [*UVICORN, "bench.baseline_app:app"],
    "buttress, no cache": [*SERVE, "bench/services/cached_discount.py:plain",
                           "--port", "{port}"],
    "buttress, response cache (hits)": [*SERVE, "bench/services/cached_discount.py:cached",
                                        "--port", "{port}"],
}
STAGE = {
    "2 ms feature stage, no cache": [*SERVE, "bench/services/slow_features.py:plain",
                                     "--port", "{port}"],
    "2 ms feature stage, cached per user": [*SERVE, "bench/services/slow_features.py:cached",
                                            "--port", "{port}"],
}
MODULE_PLAIN, MODULE_CACHED = list(MODULE)[1:]
STAGE_PLAIN, STAGE_CACHED = list(STAGE)


def measure(scenarios: dict[str, list[str]], body: str, connections: list[int],
            duration: float) -> list[Result]:
    results = []
    for name, argv in scenarios.items():
        with Server(argv) as server:
            url = server.url + "/predict"
            for conns in connections:
                wrk(name, url, body, connections=conns, duration=2)  # warm-up
                results.append(wrk(name, url, body, connections=conns, duration=duration))
    return results


def per_request(results: list[Result]) -> str:
    """µs of the one server core per request: with the core saturated, 1e6 / req/s."""
    lines = ["| scenario | conns | µs/request |", "|---|---:|---:|"]
    lines += [f"| {r.name} | {r.connections} | {1e6 / r.requests_per_s:.0f} |"
              for r in results]
    return "\n".join(lines)


def saved(results: list[Result], without: str, with_cache: str) -> str:
    lines = ["| conns | p50 saved ms | p99 saved ms |", "|---:|---:|---:|"]
    for r in (r for r in results if r.name == without):
        cached = next(c for c in results if c.name == with_cache
                      and c.connections == r.connections)
        lines.append(f"| {r.connections} | {r.p50_ms - cached.p50_ms:.2f} | "
                     f"{r.p99_ms - cached.p99_ms:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", default="16", help="for (a), comma-separated")
    parser.add_argument("--stage-connections", default="1,16", help="for (b), comma-separated")
    args = parser.parse_args()
    module = measure(MODULE, BODY, [int(c) for c in args.connections.split(",")],
                     args.duration)
    stage = measure(STAGE, STAGE_BODY, [int(c) for c in args.stage_connections.split(",")],
                    args.duration)
    print("### (a) Response cache: the discount demo, the same order every time\n")
    print(table(module, baseline="raw starlette"))
    print()
    print(per_request(module))
    no_cache = {r.connections: r.requests_per_s for r in module if r.name == MODULE_PLAIN}
    for r in module:
        if r.name == MODULE_CACHED and no_cache.get(r.connections):
            print(f"\nresponse cache vs no cache at {r.connections} connections: "
                  f"{r.requests_per_s / no_cache[r.connections]:.2f}x requests/s")
    print("\n### (b) Stage cache: a 2 ms feature look-up, cached per user\n")
    print(table(stage, baseline=STAGE_PLAIN))
    print()
    print(saved(stage, STAGE_PLAIN, STAGE_CACHED))


if __name__ == "__main__":
    main()
