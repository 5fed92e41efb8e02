"""A batched model's breaker counts batches: one slow batch is one failure, not 64."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import orjson

import buttress as bt
from buttress.pipeline.runtime import Answer
from buttress.resilience.breaker import BreakerState


class Item(bt.Input):
    x: float
    fail: bool = False


def service(name: str, batch: bt.Batch | None, slow_calls: int) -> bt.Service:
    svc = bt.Service(name, input=Item)
    calls = {"n": 0}

    def model(rows: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] <= slow_calls:
            time.sleep(0.15)  # past the 50 ms timeout
        return rows[:, 0]

    @svc.model(model=model, timeout="50ms", fallback=lambda item: np.array([-1.0]),
               breaker=bt.Breaker(consecutive_failures=3, open_for="10s"), batch=batch)
    def score(item: Item) -> np.ndarray:
        if item.fail:
            raise ValueError("bad features")
        return np.array([[item.x]])

    @svc.respond
    def respond(item: Item, score: np.ndarray) -> dict[str, float]:
        return {"score": float(score[0])}

    return svc


async def fire(runtime: bt.Runtime, n: int, **fields: object) -> list[Answer]:
    bodies = [orjson.dumps({"x": i, **fields}) for i in range(n)]
    return await asyncio.gather(*(runtime.answer(b, request_id=str(i), deadline_s=1.0)
                                  for i, b in enumerate(bodies)))


async def test_one_slow_batch_is_one_failure(tmp_path: Path) -> None:
    runtime = service("batched-breaker", bt.Batch(max_size=64, max_wait="5ms"), 1).build(
        bt.Settings(events_dir=str(tmp_path)))
    await runtime.start()
    try:
        answers = await fire(runtime, 20)
        assert all("model_timeout" in a.context.fallback_categories for a in answers)
        await asyncio.sleep(0.2)  # the slow batch finishes and reports its one outcome
        breaker = runtime.pipeline.stages["score"].breaker
        assert breaker is not None
        assert breaker.state is BreakerState.CLOSED
        healthy = await fire(runtime, 5)
        assert all(a.context.fallbacks == [] for a in healthy)
    finally:
        await runtime.stop()


async def test_unbatched_slow_calls_count_per_request(tmp_path: Path) -> None:
    runtime = service("unbatched-breaker", None, 3).build(bt.Settings(events_dir=str(tmp_path)))
    await runtime.start()
    try:
        for _ in range(3):
            await fire(runtime, 1)
        breaker = runtime.pipeline.stages["score"].breaker
        assert breaker is not None
        assert breaker.state is BreakerState.OPEN
    finally:
        await runtime.stop()


async def test_failures_before_the_batch_still_count_per_request(tmp_path: Path) -> None:
    runtime = service("featurize-breaker", bt.Batch(max_size=64, max_wait="5ms"), 0).build(
        bt.Settings(events_dir=str(tmp_path)))
    await runtime.start()
    try:
        for _ in range(3):
            answers = await fire(runtime, 1, fail=True)
            assert answers[0].context.fallback_categories == ["model_error"]
        answers = await fire(runtime, 1)
        assert answers[0].context.fallback_categories == ["model_unavailable"]
    finally:
        await runtime.stop()
