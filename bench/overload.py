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
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import LOAD_CPU, Server, pinned

PY = sys.executable
DEMO = [PY, "-m", "buttress.cli", "serve", "buttress.demo.service:svc", "--port", "{port}"]
RAW = [PY, "-m", "uvicorn", "--port", "{port}", "--loop", "uvloop", "--http", "httptools",
       "--no-access-log", "--log-level", "warning", "bench.baseline_app:app"]
ADMIN_TOKEN = "bench"
GUARDRAILS = ("discount_value_per_minute", "discounted_orders_per_user_per_hour")
N_USERS, N_PRODUCTS = 5000, 2000  # the demo's known ids: 1..N

_WRK_SCRIPT = """
local bodies = {%s}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) healthy = 0; degraded = 0; shed = 0; failed = 0; i = 0 end
request = function()
  i = i + 1
  return wrk.format("POST", "/predict", {["Content-Type"] = "application/json"},
                    bodies[(i %% #bodies) + 1])
end
response = function(status, headers, body)
  if status >= 300 then failed = failed + 1; return end
  local f = headers["x-fallback"]
  if f == nil then healthy = healthy + 1
  elseif string.find(f, "overloaded") then shed = shed + 1
  else degraded = degraded + 1 end
end
done = function(summary, latency, requests)
  local h, d, s, f = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    h = h + t:get("healthy"); d = d + t:get("degraded"); s = s + t:get("shed")
    f = f + t:get("failed")
  end
  io.write(string.format("COUNTS %%d %%d %%d %%d\\n", h, d, s, f))
end
"""


def orders(n: int = 2000, seed: int = 11) -> list[str]:
    rng = np.random.default_rng(seed)
    bodies = []
    for i in range(n):
        subs = [{"sub_order_id": f"so-{j}", "product_id": int(rng.integers(1, N_PRODUCTS + 1)),
                 "price": round(float(np.exp(rng.uniform(np.log(50), np.log(5000)))), 2),
                 "margin": round(float(rng.uniform(0.05, 0.4)), 3),
                 "quantity": int(rng.integers(1, 3))}
                for j in range(int(rng.integers(1, 6)))]
        bodies.append(json.dumps({"order_id": f"o-{i}",
                                  "user": {"id": int(rng.integers(1, N_USERS + 1)),
                                           "app_version": "5.12.0"},
                                  "sub_orders": subs}))
    return bodies


@dataclass
class Run:
    name: str
    connections: int
    seconds: float
    healthy: int
    degraded: int
    shed: int
    failed: int
    admitted_ms: tuple[float, float] = (0.0, 0.0)
    shed_ms: tuple[float, float] = (0.0, 0.0)

    @property
    def total(self) -> int:
        return self.healthy + self.degraded + self.shed + self.failed

    def rate(self, count: int) -> float:
        return count / self.seconds


def drive(name: str, url: str, script: str, connections: int, duration: float) -> Run:
    out = subprocess.run(
        pinned(LOAD_CPU, ["wrk", "-t", "1", "-c", str(connections), "-d", f"{int(duration)}s",
                          "-s", script, url + "/predict"]),
        capture_output=True, text=True, check=True).stdout
    counts = re.search(r"COUNTS (\d+) (\d+) (\d+) (\d+)", out)
    seconds = float(re.search(r"requests in ([\d.]+)s", out).group(1))  # type: ignore[union-attr]
    assert counts is not None, out
    return Run(name, connections, seconds, *map(int, counts.groups()))


def server_latencies(events_dir: Path, since: float, until: float) -> tuple[
        tuple[float, float], tuple[float, float]]:
    """(p50, p99) ms of admitted and of shed requests, from the server's events."""
    time.sleep(1.5)  # the event writer flushes in the background
    admitted: list[float] = []
    shed: list[float] = []
    for path in events_dir.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if since <= event["ts"] <= until and event.get("route") == "/predict":
                shed_now = "overloaded" in event["fallbacks"]
                (shed if shed_now else admitted).append(event["latency_ms"])
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


def demo_runs(admission: str, levels: list[int], script: str, duration: float) -> list[Run]:
    runs = []
    with tempfile.TemporaryDirectory(prefix="buttress-overload-") as tmp:
        env = {"BUTTRESS_ADMIN_TOKEN": ADMIN_TOKEN, "BUTTRESS_MAX_CONCURRENCY": admission,
               "BUTTRESS_FEATURES_URL": f"sqlite:///{tmp}/features.db"}
        with Server(DEMO, env=env) as server:
            lift_guardrails(server.url)
            events = Path(server.tmp.name) / "events"
            for connections in levels:
                drive("warm-up", server.url, script, connections, 3)
                since = time.time()
                run = drive(f"admission {admission}", server.url, script, connections, duration)
                run.admitted_ms, run.shed_ms = server_latencies(events, since, time.time())
                runs.append(run)
    return runs


def raw_run(script: str, connections: int, duration: float) -> Run:
    with Server(RAW) as server:
        drive("warm-up", server.url, script, connections, 2)
        return drive("raw starlette", server.url, script, connections, duration)


def table(runs: list[Run], raw: Run) -> str:
    lines = [f"raw Starlette (same model, unbatched) at {raw.connections} connections: "
             f"{raw.rate(raw.total):,.0f} req/s\n",
             "| admission | conns | req/s | healthy req/s | healthy share | shed share | "
             "other fallbacks | admitted p50 / p99 ms | shed p50 / p99 ms | healthy vs raw |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        lines.append(
            f"| {r.name.split()[-1]} | {r.connections} | {r.rate(r.total):,.0f} | "
            f"{r.rate(r.healthy):,.0f} | {r.healthy / max(r.total, 1):.0%} | "
            f"{r.shed / max(r.total, 1):.0%} | {r.degraded / max(r.total, 1):.0%} | "
            f"{r.admitted_ms[0]:.1f} / {r.admitted_ms[1]:.1f} | "
            f"{r.shed_ms[0]:.1f} / {r.shed_ms[1]:.1f} | "
            f"{r.rate(r.healthy) / raw.rate(raw.total):.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--peak", type=int, default=0,
                        help="peak concurrency if known (skips the search)")
    parser.add_argument("--search", default="8,16,32,64,128")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (scripts/system-packages.sh)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(_WRK_SCRIPT % ",".join(f"[==[{b}]==]" for b in orders()))
    try:
        peak = args.peak
        if not peak:
            search = demo_runs("off", [int(c) for c in args.search.split(",")], lua.name,
                               args.duration)
            print("## finding the peak (admission off)\n")
            print(table(search, raw_run(lua.name, 32, args.duration)) + "\n")
            peak = max(search, key=lambda r: r.rate(r.healthy)).connections
        levels = [peak, 2 * peak, 4 * peak]
        runs = [*demo_runs("off", levels, lua.name, args.duration),
                *demo_runs("auto", levels, lua.name, args.duration)]
        raw = raw_run(lua.name, peak, args.duration)
        print(f"## 1x, 2x, 4x the peak concurrency ({peak})\n")
        print(table(sorted(runs, key=lambda r: (r.connections, r.name)), raw))
        best = max(r.rate(r.healthy) for r in runs if r.connections == peak)
        for r in runs:
            if r.connections == 2 * peak:
                print(f"\nat 2x the peak, {r.name}: healthy {r.rate(r.healthy) / best:.0%} "
                      f"of the peak's healthy throughput")
    finally:
        os.unlink(lua.name)


if __name__ == "__main__":
    main()
