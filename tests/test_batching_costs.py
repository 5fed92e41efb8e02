"""What the batcher costs the event loop, pinned so a refactor cannot quietly add to it.

The batcher is on the hot path (PERFORMANCE.md budgets ≈ 25 µs for a whole request; a
``create_task`` alone is ≈ 3 µs): a batch whose runner returns a Future creates no task, a
finished run resolves all its callers from one done-callback, and deadlines are watched
with one timer per batch, not one per item.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from buttress.batching import Batch, Batcher, Rows


class CountedFuture(asyncio.Future[Rows]):
    """A runner's Future that counts the done-callbacks attached to it."""

    callbacks = 0

    def add_done_callback(self, fn: Callable[[Any], object], *, context: Any = None) -> None:
        CountedFuture.callbacks += 1
        super().add_done_callback(fn, context=context)


def future_runner(batch: Rows) -> asyncio.Future[Rows]:
    """Like ``in_executor``: a plain Future, resolved a loop iteration later."""
    future = CountedFuture()
    asyncio.get_running_loop().call_soon(future.set_result, batch.sum(axis=1))
    return future


async def test_a_future_runner_costs_no_task_and_one_callback_per_batch() -> None:
    CountedFuture.callbacks = 0
    batcher = Batcher(Batch(max_size=16, max_wait="1ms"), future_runner)
    inputs = [np.full((1 + i % 3, 2), float(i)) for i in range(120)]
    callers = [asyncio.ensure_future(batcher.submit(x)) for x in inputs]
    loop = asyncio.get_running_loop()
    created = [0]

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
        created[0] += 1
        return asyncio.Task(coro, loop=loop, **kw)

    loop.set_task_factory(counting)  # the callers exist: count what the batcher creates
    try:
        results = await asyncio.gather(*callers)
    finally:
        loop.set_task_factory(None)
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(result, x.sum(axis=1))
    stats = batcher.stats()
    assert stats.batches >= 120 * 2 // 16  # rows-sized batches really formed
    assert created[0] == 0  # no task per batch (nor per item)
    assert CountedFuture.callbacks == stats.runs  # one callback resolves each batch


async def test_deadlines_cost_one_timer_per_batch_not_one_per_item(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    timers = [0]
    call_later = loop.call_later

    def counted(delay: float, callback: Callable[..., object], *args: Any) -> asyncio.TimerHandle:
        if getattr(callback, "__module__", "").startswith("buttress."):  # not asyncio.sleep's
            timers[0] += 1
        return call_later(delay, callback, *args)

    monkeypatch.setattr(loop, "call_later", counted)
    gate = asyncio.Event()

    async def held(batch: Rows) -> Rows:
        await gate.wait()
        return batch.sum(axis=1)

    # Only fullness flushes (a stalled loop iteration must not flush a partial batch).
    batcher = Batcher(Batch(max_size=64, max_wait="10s", adaptive=False), held)
    start = time.monotonic()
    first = [asyncio.ensure_future(batcher.submit(np.ones((1, 2)), deadline=start + 5 + i / 1e3))
             for i in range(64)]  # fills one batch: it starts at once
    behind = [asyncio.ensure_future(batcher.submit(np.ones((1, 2)), deadline=start + 6 + i / 1e3))
              for i in range(64)]  # queued behind the running batch, later deadlines
    await asyncio.sleep(0.01)
    assert batcher.stats().running
    assert timers[0] <= 2  # the running batch's one deadline timer (and at most a flush timer)
    gate.set()
    results = await asyncio.gather(*first, *behind)
    assert all(r.tolist() == [2.0] for r in results)
    assert batcher.stats().batches == 2
    assert timers[0] <= 4  # two batches: one deadline timer each, plus flush timers
