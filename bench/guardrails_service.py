"""What a guardrail check adds per request in the running server: none vs memory:// vs redis://.

    .venv/bin/python bench/guardrails_service.py [--duration 4] [--rounds 5]
                          [--connections 1,16] [--redis redis://127.0.0.1:6379/0]

One service, declared below, served three times in one run: without guardrails, with the
demo's two guardrails on ``memory://``, and with the same two on ``redis://`` (a fresh
namespace, deleted at the end). The guardrails are a global sliding window on the discount
value and a per-user fixed window on the count, with limits so high that every request is
admitted: the common path. The model is an in-process async runner doing one NumPy multiply
(no thread hop, no batcher, no response cache), so the guardrail's cost is not hidden behind
the model's.

Servers on core 0, wrk on core 1 (taskset); the machine Redis runs wherever the OS puts it.
The three servers stay up together and take turns in rotating order for ``--rounds`` rounds;
the table shows each figure's median, since a shared machine's load drifts within a run.
``added µs/req`` is ``1e6/req/s - 1e6/req/s(no guardrails)`` at the same connection count: at
1 connection it is the latency a request gains (a Redis round trip included); at 16, while the
server's core is the bottleneck, it is the server CPU each request costs — the figure to hold
against the per-request budget in PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import buttress as bt

if TYPE_CHECKING:
    from bench.harness import Result, Server

GUARDRAILS_ENV = "BENCH_GUARDRAILS"
NAME_ENV = "BENCH_SERVICE_NAME"
TOKEN = "bench-token"
BODY = json.dumps({"order_id": "o-1", "user": 42, "price": 499.0})


class Order(bt.Input):
    order_id: str
    user: int
    price: float


class Discount(bt.Output):
    order_id: str
    discount_pct: float


class Scorer:
    """A model that costs next to nothing and never leaves the event loop."""

    async def run(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(rows[:, 0] * 0.015)

    def close(self) -> None:
        pass


def discount_value(order: Order, discount: Discount) -> float:
    return order.price * discount.discount_pct / 100


def user_of(order: Order) -> str:
    return str(order.user)


GUARDRAILS = [
    bt.SlidingWindow("discount_value_per_minute", limit=1e9, window="1min",
                     measure=discount_value),
    bt.FixedWindow("orders_per_user_per_hour", limit=1e9, window="1h", key=user_of),
]

svc = bt.Service(
    os.environ.get(NAME_ENV, "guardrail-bench"), input=Order, output=Discount,
    example=json.loads(BODY),
    guardrails=GUARDRAILS if os.environ.get(GUARDRAILS_ENV) == "on" else ())


@svc.model(model=Scorer(), fallback=0.0)
def discount_model(order: Order) -> np.ndarray:
    return np.array([[order.price]])


@svc.respond
def respond(order: Order, discount_model: np.ndarray) -> Discount:
    # the model's answer is an array; its fallback (the default prediction) the scalar 0.0
    return Discount(order_id=order.order_id,
                    discount_pct=float(np.asarray(discount_model).ravel()[0]))


# -- the benchmark ------------------------------------------------------------------------


def scenarios(redis_url: str, name: str) -> dict[str, dict[str, str]]:
    common = {NAME_ENV: name, "BUTTRESS_ADMIN_TOKEN": TOKEN, "BUTTRESS_BACKEND": "memory://"}
    return {
        "no guardrails": {**common, GUARDRAILS_ENV: "off"},
        "memory://": {**common, GUARDRAILS_ENV: "on", "BUTTRESS_GUARDRAILS_URL": "memory://"},
        "redis://": {**common, GUARDRAILS_ENV: "on", "BUTTRESS_GUARDRAILS_URL": redis_url},
    }


def usage(url: str) -> str:
    """What the guardrails counted, as the admin API reports it: proof they were on."""
    import httpx

    reply = httpx.get(f"{url}/admin/guardrails", timeout=5,
                      headers={"Authorization": f"Bearer {TOKEN}"}).json()
    return ", ".join(f"{g['name']} used {sum(u['used'] for u in g['usage']):,.0f}"
                     for g in reply["guardrails"]) or "none"


def delete_namespace(redis_url: str, name: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url.split("?")[0])
    keys = list(client.scan_iter(match=f"buttress:{{{name}}}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@dataclass(frozen=True)
class Counters:
    """A server's CPU seconds so far and its answers by status and by fallback category."""

    cpu: float
    statuses: Counter[str]
    fallbacks: Counter[str]

    @classmethod
    def read(cls, server: Server) -> Counters:
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        statuses: Counter[str] = Counter()
        fallbacks: Counter[str] = Counter()
        started = time.monotonic()
        # generous: twice, on this shared machine, a server took over 5 s to answer this
        text = httpx.get(f"{server.url}/metrics", timeout=60).text
        if time.monotonic() - started > 1:
            print(f"note: {server.url}/metrics took {time.monotonic() - started:.1f} s",
                  file=sys.stderr)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "buttress_requests_total":
                    statuses[sample.labels["status"]] += int(sample.value)
                elif sample.name == "buttress_fallbacks_total":
                    fallbacks[sample.labels["category"]] += int(sample.value)
        return cls(cpu, statuses, fallbacks)

    def __sub__(self, before: Counters) -> Counters:
        return Counters(self.cpu - before.cpu, self.statuses - before.statuses,
                        self.fallbacks - before.fallbacks)


@dataclass(frozen=True)
class Run:
    result: Result
    cpu_us: float
    """Server CPU per answered request, in microseconds (immune to waiting for a core)."""
    counters: Counters


def measure(scenario: str, server: Server, connections: int, duration: float) -> Run:
    from harness import wrk

    before = Counters.read(server)
    result = wrk(scenario, server.url + "/predict", BODY, connections=connections,
                 duration=duration)
    spent = Counters.read(server) - before
    answered = max(1, sum(spent.statuses.values()))
    return Run(result, 1e6 * spent.cpu / answered, spent)


def summary(runs: list[Run]) -> tuple[Result, float, Counters]:
    """Each figure's median over the rounds (a noisy neighbour hits one round, not all)."""
    from harness import Result

    first = runs[0].result
    results = [r.result for r in runs]
    median = statistics.median
    total = Counters(sum(r.counters.cpu for r in runs),
                     sum((r.counters.statuses for r in runs), Counter()),
                     sum((r.counters.fallbacks for r in runs), Counter()))
    return (Result(first.name, first.connections, median([r.requests_per_s for r in results]),
                   median([r.p50_ms for r in results]), median([r.p99_ms for r in results]),
                   sum(r.non_2xx for r in results), sum(r.errors for r in results)),
            median([r.cpu_us for r in runs]), total)


def added_table(rows: list[tuple[Result, float, Counters]], baseline: str) -> str:
    base = {r.connections: (r, cpu) for r, cpu, _ in rows if r.name == baseline}
    lines = ["| guardrails | conns | req/s | p50 ms | p99 ms | server CPU µs/req "
             "| added CPU µs/req | added p50 µs | answers not 200 or with a fallback |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r, cpu, counters in rows:
        b, b_cpu = base[r.connections]
        odd = {f"status {k}": v for k, v in counters.statuses.items() if k != "200"}
        odd.update(counters.fallbacks)
        lines.append(
            f"| {r.name} | {r.connections} | {r.requests_per_s:,.0f} | {r.p50_ms:.3f} "
            f"| {r.p99_ms:.2f} | {cpu:.0f} | {cpu - b_cpu:+.0f} "
            f"| {1000 * (r.p50_ms - b.p50_ms):+.0f} "
            f"| {', '.join(f'{k}: {v}' for k, v in odd.items()) or 'none'} |")
    return "\n".join(lines)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `harness`, as the others do
    from harness import Server

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", default="1,16")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    name = f"guardrail-bench-{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, "-m", "buttress.cli", "serve", "bench/guardrails_service.py:svc",
            "--port", "{port}"]
    runs: dict[tuple[str, int], list[Run]] = {}
    try:
        with contextlib.ExitStack() as stack:
            # All three servers stay up (an idle one costs nothing) and take turns, round
            # after round, in a rotating order: drift in the machine's load hits all alike.
            servers = {scenario: stack.enter_context(Server(argv, env=env))
                       for scenario, env in scenarios(args.redis, name).items()}
            order = list(servers)
            for conns in map(int, args.connections.split(",")):
                for scenario, server in servers.items():  # warm up
                    measure(scenario, server, conns, 2)
                for round_ in range(args.rounds):
                    for scenario in order[round_ % 3:] + order[:round_ % 3]:
                        run = measure(scenario, servers[scenario], conns, args.duration)
                        runs.setdefault((scenario, conns), []).append(run)
            for scenario, server in servers.items():
                print(f"{scenario}: {usage(server.url)}", file=sys.stderr)
    finally:
        delete_namespace(args.redis, name)
    rows = sorted((summary(r) for r in runs.values()),
                  key=lambda row: (row[0].connections, order.index(row[0].name)))
    print(f"medians of {args.rounds} rounds of {args.duration:g} s per scenario and load")
    print(added_table(rows, baseline="no guardrails"))


if __name__ == "__main__":
    main()
