"""What an open dashboard costs ``/predict``: the demo with no dashboard open and with one
open, alternated round by round on the same server, plus raw Starlette in the same run.

    .venv/bin/python bench/dashboard.py [--rounds 3] [--duration 10] [--connections 64]
    .venv/bin/python bench/dashboard.py --viewer chromium   # a real page in headless chromium

Server on core 0, wrk on core 1 (``harness.py``), this process (and the dashboard viewer) on
core 1 too. Requests are varied demo orders (``harness.varied_orders``); the demo's guardrails
are lifted (admin API) so the run measures predictions, not an exhausted budget. The server
keeps every event of the run (the insight charts read up to 10 minutes of them), so later
rounds carry more events than earlier ones, as a server would.

"One dashboard open" is, by default, a poller doing what the page does: it loads
``/dashboard`` and its files once, then ``GET /dashboard/data`` every ``poll_ms`` (from the
document, 1 s). ``--viewer chromium`` opens the real page in Debian's chromium instead (its
rendering shares core 1 with wrk). Prints Markdown: req/s (median of the rounds), the share
answered without any fallback, p99, the server's CPU per request, and the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    LOAD_CPU,
    Counted,
    Server,
    counting_script,
    cpu_seconds,
    varied_orders,
    wrk_counting,
)

PY = sys.executable
DEMO = [PY, "-m", "buttress.cli", "serve", "buttress.demo.service:svc", "--port", "{port}"]
RAW = [PY, "-m", "uvicorn", "--port", "{port}", "--loop", "uvloop", "--http", "httptools",
       "--no-access-log", "--log-level", "warning", "bench.baseline_app:app"]
ADMIN_TOKEN = "bench"
GUARDRAILS = ("discount_value_per_minute", "discounted_orders_per_user_per_hour")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PAGE_FILES = ("/dashboard", "/dashboard/static/dashboard.css", "/dashboard/static/charts.js",
              "/dashboard/static/dashboard.js", "/dashboard/static/favicon.svg")


@dataclass
class Round:
    counted: Counted
    cpu_us: float
    query_cpu_s: float
    polls: int = 0


def query_worker_cpu(server_pid: int) -> float:
    """CPU seconds of the server's dashboard query process so far (0 while there is none):
    the server's own /proc figures leave out a child that is still running."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[1]) == server_pid and b"query_worker" in (
                    stat.parent / "cmdline").read_bytes():
                total += cpu_seconds(int(stat.parent.name))
        except (OSError, ValueError, IndexError):  # it exited meanwhile
            continue
    return total


@contextmanager
def poller(url: str) -> Iterator[Callable[[], int]]:
    """What the page does, without drawing: its files once, then the data every poll_ms.
    Yields a function counting the data polls so far."""
    polls = [0]
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            for path in PAGE_FILES:
                http.get(path).raise_for_status()
            while not stop.is_set():
                document = http.get("/dashboard/data").raise_for_status().json()
                polls[0] += 1
                stop.wait(document["poll_ms"] / 1000)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield lambda: polls[0]
    finally:
        stop.set()
        thread.join(timeout=10)


@contextmanager
def chromium_page(url: str) -> Iterator[Callable[[], int]]:
    """The real page in headless chromium (it polls on its own while wrk runs); yields a
    function counting its data polls so far."""
    from playwright.sync_api import Request, sync_playwright

    polls = [0]

    def finished(request: Request) -> None:
        polls[0] += request.url.endswith("/dashboard/data")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.on("requestfinished", finished)
        page.goto(f"{url}/dashboard")

        def count() -> int:
            page.wait_for_timeout(50)  # the sync API hands events over while it is called
            return polls[0]

        try:
            yield count
        finally:
            browser.close()


def measure(server: Server, script: str, connections: int, duration: float) -> Round:
    pid = server.process.pid
    cpu, queries = cpu_seconds(pid), query_worker_cpu(pid)
    counted = wrk_counting("buttress", server.url, script, connections=connections,
                           duration=duration)
    cpu, queries = cpu_seconds(pid) - cpu, max(0.0, query_worker_cpu(pid) - queries)
    return Round(counted, 1e6 * cpu / max(counted.total, 1), queries)


def demo_rounds(script: str, args: argparse.Namespace) -> dict[str, list[Round]]:
    rounds: dict[str, list[Round]] = {"no dashboard": [], "one dashboard open": []}
    viewer = chromium_page if args.viewer == "chromium" else poller
    with tempfile.TemporaryDirectory(prefix="buttress-dashboard-bench-") as tmp:
        env = {"BUTTRESS_ADMIN_TOKEN": ADMIN_TOKEN,
               "BUTTRESS_FEATURES_URL": f"sqlite:///{tmp}/features.db"}
        with Server(DEMO, env=env) as server:
            for name in GUARDRAILS:
                httpx.post(f"{server.url}/admin/guardrails/{name}", json={"limit": 1e9},
                           headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
                           ).raise_for_status()
            wrk_counting("warm-up", server.url, script, connections=args.connections,
                         duration=args.warmup)
            for index in range(args.rounds):
                # alternate which goes first, so neither always runs on fewer events
                order = list(rounds) if index % 2 == 0 else list(reversed(rounds))
                for scenario in order:
                    print(f"round {index + 1}: {scenario}", file=sys.stderr, flush=True)
                    if scenario == "no dashboard":
                        rounds[scenario].append(measure(server, script, args.connections,
                                                        args.duration))
                        continue
                    with viewer(server.url) as polls:
                        result = measure(server, script, args.connections, args.duration)
                        result.polls = polls()
                    rounds[scenario].append(result)
    return rounds


def raw_round(script: str, args: argparse.Namespace) -> Counted:
    with Server(RAW) as server:
        wrk_counting("warm-up", server.url, script, connections=args.connections,
                     duration=args.warmup)
        return wrk_counting("raw starlette", server.url, script, connections=args.connections,
                            duration=args.duration)


def table(rounds: dict[str, list[Round]], raw: Counted, args: argparse.Namespace) -> str:
    none = statistics.median(r.counted.rate() for r in rounds["no dashboard"])
    lines = [f"{args.connections} connections, {args.rounds} rounds of {args.duration:g} s "
             f"each, viewer: {args.viewer}\n",
             "| scenario | req/s (median) | rounds' req/s | healthy share (median, worst) | "
             "p99 ms (median) | "
             "server CPU µs/req | query process CPU s | vs no dashboard | vs raw Starlette |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| raw Starlette, same model, unbatched | {raw.rate():,.0f} | — | "
             f"{raw.healthy_share:.0%} | {raw.p99_ms:.1f} | — | — | — | 1.00x |"]
    for scenario, runs in rounds.items():
        rate = statistics.median(r.counted.rate() for r in runs)
        each = ", ".join(f"{r.counted.rate():,.0f}" for r in runs)
        polls = sum(r.polls for r in runs)
        label = scenario + (f" ({polls} data polls)" if polls else "")
        lines.append(
            f"| buttress demo, {label} | {rate:,.0f} | {each} | "
            f"{statistics.median(r.counted.healthy_share for r in runs):.0%}, "
            f"{min(r.counted.healthy_share for r in runs):.0%} | "
            f"{statistics.median(r.counted.p99_ms for r in runs):.1f} | "
            f"{statistics.median(r.cpu_us for r in runs):.0f} | "
            f"{sum(r.query_cpu_s for r in runs):.2f} | {rate / none:.3f}x | "
            f"{rate / raw.rate():.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--viewer", choices=("poller", "chromium"), default="poller")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):  # this process and its viewer beside wrk
        os.sched_setaffinity(0, {int(LOAD_CPU)})
    script = counting_script(varied_orders())
    try:
        rounds = demo_rounds(script, args)
        raw = raw_round(script, args)
    finally:
        os.unlink(script)
    print(table(rounds, raw, args))
    print("\nhealthy: a 2xx without X-Fallback, the median and the worst round; query process "
          "CPU: the dashboard's insight queries (nice 19), all rounds together.")


if __name__ == "__main__":
    main()
