"""The CPU time of one alert-evaluation round, in-process.

    .venv/bin/python bench/alert_round.py [--requests 20000] [--rounds 20]

A demo runtime serves ``--requests`` varied orders (its events written to a temporary
directory), then its evaluator runs ``--rounds`` rounds of three rules, as the demo's
documentation declares them: a fallback-rate ratio and a p99 quantile on metrics, and the
mean discount over the last 5 minutes as an insight query (DuckDB over the event files).
Prints the CPU time of a round (process time: the loop's work plus the query's thread), with
and without the query rule.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import varied_orders

import buttress as bt
from buttress.demo.service import svc
from buttress.observability.alert_rules import AlertRule
from buttress.observability.alerts import evaluator_for

RULES = [
    {"name": "fallback_rate", "metric": "buttress_fallbacks_total", "function": "ratio",
     "over": "buttress_requests_total", "window": "5m", "op": ">", "threshold": 0.1},
    {"name": "p99_latency", "metric": "buttress_request_duration_seconds",
     "function": "quantile", "quantile": 0.99, "window": "5m", "op": ">", "threshold": 0.2},
    {"name": "large_discounts", "query": "SELECT avg(prediction.mean_discount_pct) FROM events "
     "WHERE kind = 'request' AND status = 200", "window": "5m", "op": ">", "threshold": 14.0},
]


async def main(requests: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = bt.Settings(events_dir=f"{tmp}/events", max_concurrency="off")
        runtime = svc.build(settings)
        await runtime.start()
        bodies = [b.encode() for b in varied_orders(2000)]
        for start in range(0, requests, 200):
            await asyncio.gather(*(runtime.answer(bodies[i % len(bodies)], request_id=str(i))
                                   for i in range(start, start + 200)))
        runtime.events.flush()
        for label, rules in (("metric rules only", RULES[:2]), ("with the query rule", RULES)):
            parsed = [AlertRule.model_validate(rule) for rule in rules]
            evaluator = evaluator_for(settings.model_copy(update={"alerts": parsed}),
                                      runtime.metrics, svc.name, emit=runtime.events.emit)
            times = []
            for _ in range(rounds):
                started = time.process_time()
                await evaluator.evaluate()
                times.append(time.process_time() - started)
            await evaluator.aclose()
            print(f"{label}: {1000 * statistics.median(times):.1f} ms CPU per round "
                  f"(median of {rounds}; {requests} requests' events in the window)")
        await runtime.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
