"""Where buttress's per-request CPU goes, layer by layer, in process (no HTTP, no wrk).

    .venv/bin/python bench/pipeline_layers.py [--requests 30000] [--callers 64] [--repeat 3]
    .venv/bin/python bench/pipeline_layers.py --features-url redis://127.0.0.1:6379/0

``bench/batching.py`` says how far the batched pipeline is from the raw floor; this says
which layer the difference is made of. Each scenario serves the discount demo's order to
``--callers`` closed-loop callers inside one uvloop process and reports the *main thread's*
CPU per request (``time.thread_time``): the event loop's share, the part batching cannot
amortise and the one that limits a saturated server. The model is a zero-cost stand-in
(``predict`` returns zeros, still one executor hop per batch), so the model's own CPU does
not blur the layers. Rows, cumulative:

* ``raw handler``: the raw Starlette endpoint's work (``bench/raw_apps.py``: orjson, feature
  dicts, ``build_rows``, its ``MiniBatcher``, the response) called directly: the floor;
* ``buttress: input + respond``: ``Runtime.answer`` with the demo's ``Order`` input and a
  responder that returns the order id: validation, metrics, the event;
* ``+ 2 feature stages``: the demo's user and product look-ups in a ``memory://`` store;
* ``+ batched model stage``: the demo's model stage (``build_rows``, ``bt.Batch(64, 2ms)``);
* ``+ demo responder``: the demo's pydantic response (= the bench's tabular service).

``--features-url`` puts the feature store elsewhere (default ``memory://``); on Redis the
demo's users and products are written under ``buttress:{discount}:features:*`` when absent.

Numbers move with the machine; the increments and the last row's ratio to the first are
what to compare across runs. Printed as Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import buttress as bt
from bench.raw_apps import MiniBatcher, _executor, tabular_handler
from buttress.demo import service as demo
from buttress.demo.data import PRODUCT_DEFAULTS, USER_DEFAULTS

BODY = orjson.dumps(demo.EXAMPLE)
Ask = Callable[[], Awaitable[Any]]


class ZeroModel:
    """Costs nothing: what remains is the pipeline's own work."""

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return np.zeros(len(rows))


def layered_service(layers: int) -> bt.Service:
    """The demo's pipeline up to ``layers`` (1: input + respond ... 4: the whole demo)."""
    demo_respond = layers >= 4
    svc = bt.Service(f"layers-{layers}", input=demo.Order, example=demo.EXAMPLE,
                     output=demo.Discounts if demo_respond else None)
    svc.resource(demo.features)
    if layers >= 2:
        svc.stage(timeout="30ms", fallback=lambda order: dict(USER_DEFAULTS),
                  category=bt.Category.FEATURES_UNAVAILABLE)(demo.user_features)
        svc.stage(timeout="30ms",
                  fallback=lambda order: [PRODUCT_DEFAULTS] * len(order.sub_orders),
                  category=bt.Category.FEATURES_UNAVAILABLE)(demo.product_features)
    if layers >= 3:
        svc.model(model=ZeroModel(), version="zero", timeout="1s",
                  fallback=demo.default_discounts,
                  breaker=bt.Breaker(consecutive_failures=5, open_for="5s"),
                  batch=bt.Batch(max_size=64, max_wait="2ms"))(demo.discount_model)
    if demo_respond:
        svc.respond(demo.respond)
    elif layers == 3:
        @svc.respond
        def respond_3(order: demo.Order, discount_model: np.ndarray) -> dict[str, str]:
            return {"order_id": order.order_id}
    elif layers == 2:
        @svc.respond
        def respond_2(order: demo.Order, user_features: dict[str, Any],
                      product_features: list[dict[str, Any]]) -> dict[str, str]:
            return {"order_id": order.order_id}
    else:
        @svc.respond
        def respond_1(order: demo.Order) -> dict[str, str]:
            return {"order_id": order.order_id}
    return svc


async def measure(ask: Ask, callers: int, requests: int) -> float:
    """Main-thread CPU µs per request over ``requests`` closed-loop requests (after as many
    for warm-up)."""
    for _round in ("warm-up", "measured"):
        left = requests

        async def caller() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await ask()

        cpu = time.thread_time()
        await asyncio.gather(*(caller() for _ in range(callers)))
        cpu = time.thread_time() - cpu
    return 1e6 * cpu / requests


async def raw_floor(callers: int, requests: int) -> float:
    handle = tabular_handler()
    batcher = MiniBatcher(ZeroModel().predict, _executor())

    async def ask() -> None:
        await handle(BODY, batcher.submit)

    return await measure(ask, callers, requests)


async def buttress_layer(layers: int, callers: int, requests: int, events_dir: str,
                         features_url: str = "memory://") -> float:
    runtime = layered_service(layers).build(
        bt.Settings(deadline="2s", events_dir=events_dir, features_url=features_url))
    await runtime.start()

    async def ask() -> None:
        answer = await runtime.answer(BODY, request_id="bench")
        if answer.status != 200:
            raise RuntimeError(f"unexpected answer {answer.status}: {answer.body[:200]!r}")
        for category in answer.context.fallback_categories:
            FALLBACKS[category] = FALLBACKS.get(category, 0) + 1

    try:
        return await measure(ask, callers, requests)
    finally:
        await runtime.stop()


FALLBACKS: dict[str, int] = {}
"""Fallbacks served over all runs (warm-up included): a fast run that served defaults
does not count, so the report prints them."""


NAMES = ["raw handler", "buttress: input + respond", "+ 2 feature stages",
         "+ batched model stage", "+ demo responder"]


async def run(callers: int, requests: int, repeat: int,
              features_url: str) -> list[list[float]]:
    samples: list[list[float]] = [[] for _ in NAMES]
    with tempfile.TemporaryDirectory(prefix="buttress-layers-") as events_dir:
        for _ in range(repeat):
            samples[0].append(await raw_floor(callers, requests))
            for layers in range(1, 5):
                samples[layers].append(await buttress_layer(
                    layers, callers, requests, events_dir, features_url))
    return samples


def report(samples: list[list[float]], callers: int, requests: int, repeat: int) -> str:
    medians = [statistics.median(s) for s in samples]
    lines = [f"In process, {callers} callers, {requests:,} requests per run, median of {repeat} "
             "runs; main-thread CPU per request.", "",
             "| scenario | µs/request | added by this layer | vs raw handler |",
             "|---|---:|---:|---:|"]
    for index, (name, value) in enumerate(zip(NAMES, medians, strict=True)):
        added = "" if index < 2 else f"+{value - medians[index - 1]:.1f}"
        lines.append(f"| {name} | {value:.1f} | {added} | {value / medians[0]:.2f}x |")
    served = ", ".join(f"{n} {c}" for c, n in FALLBACKS.items()) or "none"
    lines += ["", f"Fallbacks served (all runs, warm-up included): {served}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--features-url", default="memory://")
    args = parser.parse_args()
    samples = uvloop.run(run(args.callers, args.requests, args.repeat, args.features_url))
    print(f"Feature store: {args.features_url}  ")
    print(report(samples, args.callers, args.requests, args.repeat))


if __name__ == "__main__":
    main()
