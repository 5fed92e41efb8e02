"""Overload: healthy throughput past capacity, with and without admission control.

    .venv/bin/python bench/overload.py                     # find the peak, then 1x/2x/4x it
    .venv/bin/python bench/overload.py --peak 32 --duration 8

The discount demo on its embedded defaults (features in SQLite), the server pinned to core 0
and wrk to core 1 (``harness.py``). Requests are varied and realistic: known users and
products, 1 to 5 sub-orders each, cycled from 2,000 generated orders. The guardrails are
lifted (admin API) so that what is measured is overload, not a spent budget.

A *healthy* answer is a 2xx without ``X-Fallback``: the whole pipeline ran. wrk counts
healthy answers, answers with fallbacks, and answers shed by admission control
(``X-Fallback: overloaded``). The server's own events give the latency of admitted and of
shed requests apart (time inside the server).

First the peak: healthy req/s with admission off at growing concurrency (unless ``--peak``
is given). Then, at 1x, 2x and 4x the peak concurrency, admission ``off`` and ``auto`` back
to back. A raw Starlette endpoint serving the same model (one request, one model call) runs
at the peak concurrency in the same run, as the reference the other benches use.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import Counted, Server, counting_script, varied_orders, wrk_counting

PY = sys.executable
DEMO = [PY, "-m", "buttress.cli", "serve", "buttress.demo.service:svc", "--port", "{port}"]
RAW = [PY, "-m", "uvicorn", "--port", "{port}", "--loop", "uvloop", "--http", "httptools",
       "--no-access-log", "--log-level", "warning", "bench.baseline_app:app"]
ADMIN_TOKEN = "bench"
GUARDRAILS = ("discount_value_per_minute", "discounted_orders_per_user_per_hour")


def server_latencies(events_dir: Path, since: float, until: float) -> tuple[
        tuple[float, float], tuple[float, float]]:
    """(p50, p99) ms of admitted and of shed requests, from the server's events."""
    time.sleep(1.5)  # the event writer flushes in the background
    admitted: list[float] = []
    shed: list[float] = []
    for path in events_dir.rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if since <= event.get("ts", 0) <= until and event.get("route") == "/predict":
                (shed if "overloaded" in event["fallbacks"] else admitted).append(
                    event["latency_ms"])
    return _p50_p99(admitted), _p50_p99(shed)


def _p50_p99(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (0.0, 0.0)
    cuts = statistics.quantiles(values, n=100)
    return cuts[49], cuts[98]


def lift_guardrails(url: str) -> None:
    for guardrail in GUARDRAILS:
        httpx.post(f"{url}/admin/guardrails/{guardrail}", json={"limit": 1e9},
                   headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).raise_for_status()


@dataclass
class Run:
    counted: Counted
    admission: str
    admitted_ms: tuple[float, float] = (0.0, 0.0)
    shed_ms: tuple[float, float] = field(default=(0.0, 0.0))


def demo_runs(admission: str, levels: list[int], script: str, duration: float) -> list[Run]:
    runs = []
    with tempfile.TemporaryDirectory(prefix="buttress-overload-") as tmp:
        env = {"BUTTRESS_ADMIN_TOKEN": ADMIN_TOKEN, "BUTTRESS_MAX_CONCURRENCY": admission,
               "BUTTRESS_FEATURES_URL": f"sqlite:///{tmp}/features.db"}
        with Server(DEMO, env=env) as server:
            lift_guardrails(server.url)
            events = Path(server.tmp.name) / "events"
            for connections in levels:
                wrk_counting("warm-up", server.url, script, connections=connections, duration=3)
                since = time.time()
                run = Run(wrk_counting("buttress", server.url, script, connections=connections,
                                       duration=duration), admission)
                run.admitted_ms, run.shed_ms = server_latencies(events, since, time.time())
                runs.append(run)
    return runs


def raw_run(script: str, connections: int, duration: float) -> Counted:
    with Server(RAW) as server:
        wrk_counting("warm-up", server.url, script, connections=connections, duration=2)
        return wrk_counting("raw starlette", server.url, script, connections=connections,
                            duration=duration)


def table(runs: list[Run], raw: Counted) -> str:
    lines = [f"raw Starlette (same model, unbatched) at {raw.connections} connections: "
             f"{raw.rate():,.0f} req/s\n",
             "| admission | conns | req/s | healthy req/s | healthy share | shed share | "
             "other fallbacks | admitted p50 / p99 ms | shed p50 / p99 ms | healthy vs raw |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        r = run.counted
        lines.append(
            f"| {run.admission} | {r.connections} | {r.rate():,.0f} | {r.rate(r.healthy):,.0f} | "
            f"{r.healthy_share:.0%} | {r.shed / max(r.total, 1):.0%} | "
            f"{r.degraded / max(r.total, 1):.0%} | "
            f"{run.admitted_ms[0]:.1f} / {run.admitted_ms[1]:.1f} | "
            f"{run.shed_ms[0]:.1f} / {run.shed_ms[1]:.1f} | "
            f"{r.rate(r.healthy) / raw.rate():.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--peak", type=int, default=0,
                        help="peak concurrency if known (skips the search)")
    parser.add_argument("--search", default="8,16,32,64,128")
    args = parser.parse_args()
    script = counting_script(varied_orders())
    try:
        peak = args.peak
        if not peak:
            search = demo_runs("off", [int(c) for c in args.search.split(",")], script,
                               args.duration)
            print("## finding the peak (admission off)\n")
            print(table(search, raw_run(script, 32, args.duration)) + "\n", flush=True)
            best = max(search, key=lambda r: r.counted.rate(r.counted.healthy))
            peak = best.counted.connections
        levels = [peak, 2 * peak, 4 * peak]
        runs = [*demo_runs("off", levels, script, args.duration),
                *demo_runs("auto", levels, script, args.duration)]
        raw = raw_run(script, peak, args.duration)
        print(f"## 1x, 2x, 4x the peak concurrency ({peak})\n")
        print(table(sorted(runs, key=lambda r: (r.counted.connections, r.admission)), raw))
        peak_healthy = max(r.counted.rate(r.counted.healthy) for r in runs
                           if r.counted.connections == peak) or float("nan")
        for run in runs:
            r = run.counted
            if r.connections > peak:
                print(f"\nat {r.connections // peak}x the peak, admission {run.admission}: "
                      f"healthy {r.rate(r.healthy) / peak_healthy:.0%} of the peak's healthy "
                      f"throughput")
    finally:
        os.unlink(script)


if __name__ == "__main__":
    main()
