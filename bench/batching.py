"""Dynamic batching under load: buttress with and without ``bt.Batch`` against raw Starlette.

    .venv/bin/python bench/batching.py                   # both models, 1/16/64 connections
    .venv/bin/python bench/batching.py --repeat 2        # the whole run twice
    .venv/bin/python bench/batching.py --quick           # CI smoke: a few seconds per server

Two models: the discount demo's HistGradientBoosting (per-call overhead dominates) and a
4-layer 2048x2048 float32 MLP (64 MiB of weights; ``bench/services/network.py``). For each,
at every connection count, four servers run back to back, each pinned to core 0 with wrk on
core 1 (``harness.py``):

* ``raw`` - Starlette, one executor hop per request (``bench/raw_apps.py``);
* ``raw+batcher`` - Starlette with a minimal batcher, 64 rows or 2 ms: the floor;
* ``buttress`` - the full pipeline, no batching (``bench/services/*.py:svc_unbatched``);
* ``buttress+batch`` - the same with ``bt.Batch(max_size=64, max_wait="2ms")``.

Fallbacks buttress served during a measured run (``buttress_fallbacks_total`` scraped before
and after) are reported next to its throughput: a run that is fast because it served default
predictions does not count. Each run also reports the server's CPU per request (all its
threads, from /proc), the column that moves least on a shared machine. The in-process cost of
one model call (1 and 64 rows) is printed first, so the tables can be read against it.
Method and latest results: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import SERVER_CPU, Result, Server, cpu_seconds, wrk

from bench.services.network import EXAMPLE as MLP_EXAMPLE

PY = sys.executable
UVICORN = [PY, "-m", "uvicorn", "--factory", "--port", "{port}", "--loop", "uvloop",
           "--http", "httptools", "--no-access-log", "--log-level", "warning"]
SERVE = [PY, "-m", "buttress.cli", "serve"]
VARIANTS = ("raw", "raw+batcher", "buttress", "buttress+batch")
TARGET_SPEEDUP = 5.0  # buttress+batch / buttress at 64 connections, tabular model
TARGET_FLOOR = 0.9  # buttress+batch / raw+batcher, both models
TARGET_LONE_MS = 1.0  # p50 buttress+batch - buttress at 1 connection


@dataclass(frozen=True)
class Model:
    name: str
    body: str
    raw: str  # bench.raw_apps factory prefix
    service: str  # bench/services/<file>.py
    env: dict[str, str] = field(default_factory=dict)

    def argv(self, variant: str) -> list[str]:
        if variant.startswith("raw"):
            kind = "batched" if variant.endswith("batcher") else "unbatched"
            return [*UVICORN, f"bench.raw_apps:{self.raw}_{kind}"]
        attr = "svc" if variant.endswith("batch") else "svc_unbatched"
        return [*SERVE, f"{self.service}:{attr}", "--port", "{port}"]


# the demo's example order (buttress/demo/service.py), one sub-order
ORDER = {"order_id": "o-1", "user": {"id": 42, "app_version": "5.12.0"},
         "sub_orders": [{"sub_order_id": "so-1", "product_id": 501, "price": 499.0,
                         "margin": 0.18, "quantity": 1}]}
# A 2 s request deadline instead of 250 ms: 64 requests queued for an unbatched model (~1 ms
# a call for the tabular model, ~5-10 ms for the MLP), plus a garbage-collector pause, overrun
# 250 ms, and the breaker would then serve fallbacks. The bench measures throughput, so both
# models get room; docs/performance.md shows what the demo's own policies do under this load.
ROOMY_DEADLINE = {"BUTTRESS_DEADLINE": "2", "BUTTRESS_MAX_DEADLINE": "2"}
MODELS = {
    "tabular": Model("tabular", json.dumps(ORDER), "tabular", "bench/services/tabular.py",
                     env=ROOMY_DEADLINE),
    "mlp": Model("mlp", json.dumps(MLP_EXAMPLE), "mlp", "bench/services/mlp.py",
                 env=ROOMY_DEADLINE),
}


@dataclass(frozen=True)
class Run:
    model: str
    variant: str
    result: Result
    fallbacks: int | None  # None: not a buttress server
    fallback_categories: dict[str, int]
    mean_batch: float | None  # rows per model call during the run; None: unbatched
    cpu_us: float  # server CPU (all its threads) per request: robust to a busy machine


# -- in-process model cost -------------------------------------------------------------------

def _call_ms(predict: Callable[[np.ndarray], object], rows: np.ndarray, budget: float) -> float:
    predict(rows)
    times: list[float] = []
    stop = time.perf_counter() + budget
    while time.perf_counter() < stop or len(times) < 5:
        started = time.perf_counter()
        predict(rows)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def model_costs(quick: bool) -> str:
    """Median ms of one call with 1 and 64 rows, on the server's core, one native thread."""
    from threadpoolctl import threadpool_limits

    from bench.services.network import EXAMPLE_X, MLP, row_from
    from buttress.demo.data import generate_products, generate_users
    from buttress.demo.model import as_order, build_rows
    from buttress.demo.train import load_model

    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(SERVER_CPU)})
    threadpool_limits(1)  # what buttress's model threads do (limit_native_threads)
    try:
        order = as_order(ORDER)
        tabular_row = build_rows(order, generate_users().get(order.user.id),
                                 [generate_products().get(s.product_id) for s in order.sub_orders])
        mlp = MLP()
        cases = [("tabular (HistGradientBoosting)", load_model("v1").predict, tabular_row),
                 (f"mlp ({mlp.nbytes >> 20} MiB float32)", mlp.predict, row_from(EXAMPLE_X))]
        lines = ["| model | 1 row ms | 64 rows ms | 64 rows / 1 row |", "|---|---:|---:|---:|"]
        for name, predict, row in cases:
            one = _call_ms(predict, row, 0.3 if quick else 2.0)
            many = _call_ms(predict, np.repeat(row, 64, axis=0), 0.3 if quick else 2.0)
            lines.append(f"| {name} | {one:.3f} | {many:.3f} | {many / one:.1f} |")
        return "\n".join(lines)
    finally:
        os.sched_setaffinity(0, affinity)


# -- measuring -------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^(\w+)(?:\{([^}]*)\})? ([0-9.eE+-]+|NaN)$", re.M)
_CATEGORY = re.compile(r'category="([^"]*)"')


def _counters(server: Server, variant: str) -> dict[str, float]:
    """Sums of the samples the bench reads: fallbacks (also ``fallbacks:<category>``) and
    batch sizes (buttress), batches and rows (raw+batcher's ``/stats``)."""
    if variant == "raw":
        return {}
    if variant == "raw+batcher":
        stats = httpx.get(server.url + "/stats", timeout=5).json()
        return {"batches": float(stats["batches"]), "rows": float(stats["rows"])}
    text = httpx.get(server.url + "/metrics", timeout=5).text
    wanted = {"buttress_fallbacks_total": "fallbacks", "buttress_batch_size_rows_sum": "rows",
              "buttress_batch_size_rows_count": "batches"}
    sums = dict.fromkeys(wanted.values(), 0.0)
    for name, labels, value in _SAMPLE.findall(text):
        if name in wanted:
            sums[wanted[name]] += float(value)
        if name == "buttress_fallbacks_total" and (category := _CATEGORY.search(labels)):
            key = f"fallbacks:{category.group(1)}"
            sums[key] = sums.get(key, 0.0) + float(value)
    return sums


def measure(model: Model, variant: str, conns: Sequence[int], duration: float,
            warmup: float) -> list[Run]:
    runs = []
    with Server(model.argv(variant), env=model.env) as server:
        url = server.url + "/predict"
        for c in conns:
            if warmup:
                wrk(variant, url, model.body, connections=c, duration=warmup)
            before = _counters(server, variant)
            cpu = cpu_seconds(server.process.pid)
            result = wrk(variant, url, model.body, connections=c, duration=duration)
            cpu = cpu_seconds(server.process.pid) - cpu
            after = _counters(server, variant)
            delta = {k: after[k] - before.get(k, 0.0) for k in after}
            batches = delta.get("batches", 0.0)
            categories = {k.partition(":")[2]: int(v) for k, v in delta.items()
                          if k.startswith("fallbacks:") and v}
            runs.append(Run(model.name, variant, result,
                            int(delta["fallbacks"]) if "fallbacks" in delta else None,
                            categories, delta["rows"] / batches if batches else None,
                            1e6 * cpu / max(1.0, result.requests_per_s * duration)))
            print(f"  {model.name:8} {variant:15} c={c:<3} {result.requests_per_s:9,.0f} req/s "
                  f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
                  f"{runs[-1].cpu_us:6.0f} µs CPU/req", file=sys.stderr)
    return runs


# -- reporting ------------------------------------------------------------------------------

def _ratio(a: float | None, b: float | None) -> float:
    return a / b if a is not None and b else float("nan")


def report(model: str, runs: Sequence[Run]) -> str:
    by = {(r.variant, r.result.connections): r for r in runs if r.model == model}
    conns = sorted({c for _, c in by})
    lines = ["| conns | scenario | req/s | p50 ms | p99 ms | CPU µs/req | non-2xx | socket errors "
             "| fallbacks | rows/batch |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in conns:
        for v in VARIANTS:
            if (r := by.get((v, c))) is None:
                continue
            res = r.result
            fb = "-" if r.fallbacks is None else str(r.fallbacks)
            if r.fallback_categories:
                fb += " (" + ", ".join(f"{k} {v}" for k, v in r.fallback_categories.items()) + ")"
            batch = "-" if r.mean_batch is None else f"{r.mean_batch:.1f}"
            lines.append(f"| {c} | {v} | {res.requests_per_s:,.0f} | {res.p50_ms:.2f} | "
                         f"{res.p99_ms:.2f} | {r.cpu_us:,.0f} | {res.non_2xx} | {res.errors} | "
                         f"{fb} | {batch} |")
    lines += ["", "| conns | buttress+batch / buttress | buttress+batch / raw+batcher "
              "| raw+batcher / raw | buttress / raw | p50 buttress+batch - buttress (ms) "
              "| CPU/req raw+batcher / buttress+batch |", "|---:|---:|---:|---:|---:|---:|---:|"]

    def rps(v: str, c: int) -> float | None:
        r = by.get((v, c))
        return r.result.requests_per_s if r else None

    def cpu(v: str, c: int) -> float | None:
        r = by.get((v, c))
        return r.cpu_us if r else None

    for c in conns:
        bb, bu = by.get(("buttress+batch", c)), by.get(("buttress", c))
        lone = bb.result.p50_ms - bu.result.p50_ms if bb and bu else float("nan")
        lines.append(
            f"| {c} | {_ratio(rps('buttress+batch', c), rps('buttress', c)):.2f} | "
            f"{_ratio(rps('buttress+batch', c), rps('raw+batcher', c)):.2f} | "
            f"{_ratio(rps('raw+batcher', c), rps('raw', c)):.2f} | "
            f"{_ratio(rps('buttress', c), rps('raw', c)):.2f} | {lone:+.2f} | "
            f"{_ratio(cpu('raw+batcher', c), cpu('buttress+batch', c)):.2f} |")
    return "\n".join(lines)


def targets(runs: Sequence[Run]) -> str:
    by = {(r.model, r.variant, r.result.connections): r for r in runs}
    out = []

    def check(label: str, value: float, ok: bool, fallbacks: int | None) -> None:
        clean = "" if not fallbacks else f" (but {fallbacks} fallbacks served: does not count)"
        verdict = "met" if ok and not fallbacks else "NOT met"
        out.append(f"- {label}: {value:.2f} -> {verdict}{clean}")

    bb, bu = by.get(("tabular", "buttress+batch", 64)), by.get(("tabular", "buttress", 64))
    if bb and bu:
        speedup = bb.result.requests_per_s / bu.result.requests_per_s
        check(f"tabular, 64 conns: buttress+batch / buttress >= {TARGET_SPEEDUP:.0f}", speedup,
              speedup >= TARGET_SPEEDUP, bb.fallbacks)
    for model in MODELS:
        bb, floor = by.get((model, "buttress+batch", 64)), by.get((model, "raw+batcher", 64))
        if bb and floor:
            share = bb.result.requests_per_s / floor.result.requests_per_s
            check(f"{model}, 64 conns: buttress+batch / raw+batcher >= {TARGET_FLOOR}", share,
                  share >= TARGET_FLOOR, bb.fallbacks)
        bb, bu = by.get((model, "buttress+batch", 1)), by.get((model, "buttress", 1))
        if bb and bu:
            lone = bb.result.p50_ms - bu.result.p50_ms
            check(f"{model}, 1 conn: p50 buttress+batch - buttress <= {TARGET_LONE_MS} ms (ms)",
                  lone, lone <= TARGET_LONE_MS, bb.fallbacks)
    return "\n".join(out) or "- none: the targets are set at 1 and 64 connections"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk before each")
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeat", type=int, default=1, help="run everything this many times")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 16 connections, 1 s runs after 1 s of warm-up")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup, args.connections = 1.0, 1.0, "16"
    conns = [int(c) for c in args.connections.split(",")]
    models = [MODELS[m] for m in args.models.split(",")]
    print(f"# Batching bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    print(f"Command: `{' '.join(['.venv/bin/python', *sys.argv])}`  \n"
          f"Server pinned to CPU {SERVER_CPU}, wrk to the other; {args.duration:g} s per run "
          f"after {args.warmup:g} s of warm-up.\n")
    print("## One model call in-process (median, one native thread)\n")
    print(model_costs(args.quick) + "\n")
    for round_ in range(1, args.repeat + 1):
        runs = [run for model in models for variant in VARIANTS
                for run in measure(model, variant, conns, args.duration, args.warmup)]
        suffix = f" (run {round_} of {args.repeat})" if args.repeat > 1 else ""
        for model in models:
            print(f"## {model.name}{suffix}\n\n{report(model.name, runs)}\n")
        print(f"### Targets{suffix}\n\n{targets(runs)}\n", flush=True)


if __name__ == "__main__":
    main()
