"""The dynamic batcher's invariants, each a regression test for a bug peers shipped.

MLServer (#1936, #2093, and #903/#1306: outputs not mapped back per request) and Ray Serve
(#36510, #42705 leftover items never flushed, #50046 stuck after cancellations, #41057 a
cancelled caller's ``set_result`` killing the loop, #66140 one item's error stopping the
loop): results map back by identity, one failing or cancelled item fails only itself, the
queue is bounded, the wait is measured from the oldest item, and the batcher keeps serving
after every failure. Timing tests assert loose bounds only.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from buttress.batching import (
    Batch,
    Batcher,
    BatcherClosed,
    BatchObserver,
    ExpiredInQueue,
    ExpiredInRun,
    QueueFull,
    Rows,
    in_executor,
)

POISON = -999.0


def rows(n: int, value: float = 1.0, width: int = 3) -> Rows:
    return np.full((n, width), value)


class Model:
    """A fake model: sums each row, records the batches it saw, can be held by a gate."""

    def __init__(self, fn: Callable[[Rows], Rows] | None = None, *, gated: bool = False) -> None:
        self.fn = fn if fn is not None else (lambda x: x.sum(axis=1))
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.batches: list[Rows] = []

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]

    async def __call__(self, batch: Rows) -> Rows:
        self.batches.append(batch)
        await self.gate.wait()
        return self.fn(batch)


async def until(predicate: Callable[[], bool], within: float = 2.0) -> None:
    """Yield to the loop until ``predicate`` holds, at most ``within`` seconds.

    Bounded by time, not by loop turns: a state reached only after a timer (``max_wait``)
    takes fewer turns on a slow machine than on a fast one (200 turns are < 1 ms here).
    """
    give_up = time.monotonic() + within
    while time.monotonic() < give_up:
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def spawn(coro: Awaitable[Any]) -> asyncio.Task[Any]:
    return asyncio.ensure_future(coro)


# -- the declaration -----------------------------------------------------------------------


def test_batch_declaration_has_defaults_and_a_readable_repr() -> None:
    assert repr(Batch()) == "Batch(max_size=64, max_wait='2ms', max_queue=1024, adaptive=True)"
    assert Batch(max_wait="5ms").max_wait_seconds == pytest.approx(0.005)
    assert Batch(max_wait=0).max_wait_seconds == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_size": 0},
        {"max_size": True},
        {"max_size": 2.5},
        {"max_queue": 0},
        {"max_size": 64, "max_queue": 32},
        {"max_wait": "soon"},
        {"max_wait": -1},
        {"adaptive": "yes"},
    ],
)
def test_batch_declaration_rejects_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        Batch(**kwargs)


# -- results map back by identity ------------------------------------------------------------


async def test_200_concurrent_submits_of_varied_sizes_get_their_own_rows_back() -> None:
    seen: list[int] = []

    def predict(batch: Rows) -> Rows:
        seen.append(len(batch))
        return batch.sum(axis=1)

    rng = random.Random(7)
    inputs = [np.arange(rng.randint(1, 10) * 3, dtype=float).reshape(-1, 3) + i for i in range(200)]
    with ThreadPoolExecutor(max_workers=1) as pool:
        batcher = Batcher(
            Batch(max_size=32, max_wait="2ms", max_queue=4096), in_executor(predict, pool)
        )
        results = await asyncio.gather(*(batcher.submit(x) for x in inputs))
        await batcher.aclose()
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(result, x.sum(axis=1))
    assert sum(seen) == sum(len(x) for x in inputs)
    assert max(seen) <= 32  # max_size counts rows
    assert len(seen) < 100  # batches really formed
    assert batcher.stats().queued_rows == 0


async def test_max_size_counts_rows_and_an_oversized_item_runs_alone() -> None:
    model = Model()
    batcher = Batcher(Batch(max_size=8, max_wait="5ms", adaptive=False), model)
    small, big, tail = rows(3, 1.0), rows(20, 2.0), rows(2, 3.0)
    got = await asyncio.gather(batcher.submit(small), batcher.submit(big), batcher.submit(tail))
    assert model.sizes == [3, 20, 2]
    assert [len(r) for r in got] == [3, 20, 2]
    assert got[1].tolist() == [6.0] * 20


async def test_a_full_queue_after_a_run_starts_the_next_batch_at_once() -> None:
    # Ray #42705: leftovers waited forever. With max_wait=10s only fullness can flush these.
    model = Model()
    batcher = Batcher(Batch(max_size=4, max_wait="10s", adaptive=False), model)
    async with asyncio.timeout(2):
        results = await asyncio.gather(*(batcher.submit(rows(1, i)) for i in range(12)))
    assert model.sizes == [4, 4, 4]
    assert [r[0] for r in results] == [3.0 * i for i in range(12)]


# -- waiting ---------------------------------------------------------------------------------


async def test_wait_is_measured_from_the_oldest_item() -> None:
    model = Model()
    batcher = Batcher(Batch(max_wait="200ms", adaptive=False), model)
    started = time.monotonic()
    first = spawn(batcher.submit(rows(1)))
    await asyncio.sleep(0.1)  # the subject of the test: a second item arriving later
    second = spawn(batcher.submit(rows(1)))
    await asyncio.gather(first, second)
    elapsed = time.monotonic() - started
    assert model.sizes == [2]
    assert 0.19 <= elapsed < 0.28  # flushed at oldest + 200 ms, not newest + 200 ms


async def test_an_item_close_to_its_deadline_is_flushed_before_max_wait() -> None:
    model = Model()
    batcher = Batcher(Batch(max_wait="50ms", adaptive=False), model)
    started = time.monotonic()
    result = await batcher.submit(rows(1), deadline=time.monotonic() + 0.001)
    assert result.tolist() == [3.0]
    assert time.monotonic() - started < 0.025


async def test_a_queued_deadline_shortens_the_wait_of_its_whole_batch() -> None:
    model = Model()
    batcher = Batcher(Batch(max_wait="2s", adaptive=False), model)
    started = time.monotonic()
    patient = spawn(batcher.submit(rows(1)))
    hurried = spawn(batcher.submit(rows(1), deadline=time.monotonic() + 0.1))
    await asyncio.gather(patient, hurried)
    assert model.sizes == [2]
    assert time.monotonic() - started < 0.5  # far below max_wait


async def test_an_item_whose_deadline_passed_while_queued_is_skipped() -> None:
    now = [100.0]
    model = Model(gated=True)
    batcher = Batcher(Batch(max_wait="1ms"), model, clock=lambda: now[0])
    running = spawn(batcher.submit(rows(1, 1.0)))
    await until(lambda: model.sizes == [1])
    late = spawn(batcher.submit(rows(1, 5.0), deadline=now[0] + 1.0))
    await until(lambda: batcher.stats().queued_rows == 1)
    now[0] += 5.0  # the running batch took longer than the late item's deadline
    model.gate.set()
    assert (await running).tolist() == [3.0]
    with pytest.raises(ExpiredInQueue):
        await late
    assert model.sizes == [1]  # the model never saw the expired rows
    assert batcher.stats().expired == 1
    with pytest.raises(ExpiredInQueue):  # already past at submit: refused at once
        await batcher.submit(rows(1), deadline=now[0] - 0.1)


async def test_items_queued_behind_a_run_wait_for_company_after_it_ends() -> None:
    """The wait for company starts when the model is free: an item that queued during a run
    (and has waited longer than max_wait by then) is not flushed alone the moment it ends."""
    model = Model(gated=True)
    batcher = Batcher(Batch(max_size=8, max_wait="200ms", adaptive=False), model)
    first = spawn(batcher.submit(rows(1, 1.0)))
    await until(lambda: model.sizes == [1])
    second = spawn(batcher.submit(rows(1, 2.0)))
    await asyncio.sleep(0.25)  # longer than max_wait, behind the running batch
    model.gate.set()
    await first
    freed = time.monotonic()
    await asyncio.sleep(0.02)
    third = spawn(batcher.submit(rows(1, 3.0)))  # company, within max_wait of the run's end
    assert (await second).tolist() == [6.0]
    assert (await third).tolist() == [9.0]
    assert model.sizes == [1, 2]
    assert time.monotonic() - freed >= 0.19


async def test_the_wait_for_company_starts_after_the_batch_is_answered() -> None:
    """The loop iteration that resumes a batch's callers (they answer their requests) takes
    no requests in: it does not count against the next batch's max_wait."""
    model = Model(gated=True)
    batcher = Batcher(Batch(max_size=8, max_wait="100ms", adaptive=False), model)

    async def answered_slowly() -> None:
        await batcher.submit(rows(1, 1.0))
        time.sleep(0.15)  # noqa: ASYNC251 - on purpose: the caller keeps the loop busy

    first = spawn(answered_slowly())
    await until(lambda: model.sizes == [1])
    second = spawn(batcher.submit(rows(1, 2.0)))  # queued behind the running batch
    await until(lambda: batcher.stats().queued_rows == 1)
    model.gate.set()
    await first
    await asyncio.sleep(0.04)  # 190 ms after the run ended, 40 ms after its answer
    third = spawn(batcher.submit(rows(1, 3.0)))
    assert (await second).tolist() == [6.0]
    assert (await third).tolist() == [9.0]
    assert model.sizes == [1, 2]  # counted from the run's end, the second would go alone


async def test_deadlines_bound_a_running_batch_with_one_timer() -> None:
    """A slow run fails each item at its own deadline, running or queued behind it; the
    batch-mates with time left still get their rows when the run completes."""
    model = Model(gated=True)
    batcher = Batcher(Batch(max_wait="1ms", adaptive=False), model)
    started = time.monotonic()
    hurried = spawn(batcher.submit(rows(1, 1.0), deadline=started + 0.05))
    patient = spawn(batcher.submit(rows(1, 2.0), deadline=started + 5.0))
    await until(lambda: model.sizes == [2])
    queued = spawn(batcher.submit(rows(1, 3.0), deadline=time.monotonic() + 0.1))
    with pytest.raises(ExpiredInRun):
        await hurried
    assert 0.04 <= time.monotonic() - started < 0.3
    with pytest.raises(ExpiredInQueue):
        await queued
    assert time.monotonic() - started < 0.4
    model.gate.set()
    assert (await patient).tolist() == [6.0]
    assert model.sizes == [2]  # the expired queued rows never reached the model
    assert batcher.stats().expired == 2
    assert batcher.stats().queued_rows == 0


async def test_adaptive_wait_lets_lone_or_lockstep_requests_skip_max_wait() -> None:
    model = Model()
    batcher = Batcher(Batch(max_wait="20ms"), model)
    for i in range(5):  # one closed-loop client: it never overlaps itself
        started = time.monotonic()
        assert (await batcher.submit(rows(1, i))).tolist() == [3.0 * i]
        assert time.monotonic() - started < 0.01
    assert model.sizes == [1] * 5

    async def lockstep_client(i: int) -> None:  # four clients always answered together
        for _ in range(5):
            started = time.monotonic()
            assert (await batcher.submit(rows(1, i))).tolist() == [3.0 * i]
            assert time.monotonic() - started < 0.01

    await asyncio.gather(*(lockstep_client(i) for i in range(4)))
    assert model.sizes == [1] * 5 + [4] * 5

    fixed = Batcher(Batch(max_wait="20ms", adaptive=False), Model())
    started = time.monotonic()
    await fixed.submit(rows(1))
    assert time.monotonic() - started >= 0.015  # without adaptive, the lone item waits


async def test_adaptive_still_batches_concurrent_arrivals() -> None:
    model = Model(gated=True)
    batcher = Batcher(Batch(max_wait="20ms"), model)
    same_tick = [spawn(batcher.submit(rows(1, i))) for i in range(40)]
    await until(lambda: model.sizes == [40])  # one batch for items of the same loop tick
    during_run = [spawn(batcher.submit(rows(1, i))) for i in range(10)]
    await until(lambda: batcher.stats().queued_rows == 10)
    model.gate.set()
    await asyncio.gather(*same_tick, *during_run)
    assert model.sizes == [40, 10]  # accumulated while the model was busy


# -- failure isolation -----------------------------------------------------------------------


def poisonable(batch: Rows) -> Rows:
    if (batch == POISON).any():
        raise ValueError("poisoned row")
    return batch.sum(axis=1)


async def test_an_item_that_breaks_the_model_fails_only_itself() -> None:
    model = Model(poisonable)
    batcher = Batcher(Batch(max_wait="50ms"), model)
    poisoned = {3, 17, 31}
    inputs = [rows(1 + i % 2, POISON if i in poisoned else float(i)) for i in range(40)]
    results = await asyncio.gather(*(batcher.submit(x) for x in inputs), return_exceptions=True)
    for i, (x, result) in enumerate(zip(inputs, results, strict=True)):
        if i in poisoned:
            assert isinstance(result, ValueError)
            assert str(result) == "poisoned row"
        else:
            assert isinstance(result, np.ndarray)
            np.testing.assert_array_equal(result, x.sum(axis=1))
    stats = batcher.stats()
    assert (stats.batches, stats.rows) == (1, 60)
    assert stats.failed_runs <= 1 + 4 * 6  # bisecting stays within its budget
    assert (await batcher.submit(rows(1, 2.0))).tolist() == [6.0]  # the batcher keeps serving


async def test_a_model_failing_on_everything_costs_a_bounded_number_of_runs() -> None:
    healthy = [False]

    def flaky(batch: Rows) -> Rows:
        if not healthy[0]:
            raise ConnectionError("model server down")
        return batch.sum(axis=1)

    model = Model(flaky)
    batcher = Batcher(Batch(max_wait="50ms"), model)
    results = await asyncio.gather(
        *(batcher.submit(rows(1)) for _ in range(32)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    assert batcher.stats().runs <= 1 + 4 * 5
    healthy[0] = True
    assert (await batcher.submit(rows(2))).tolist() == [3.0, 3.0]


async def test_a_model_returning_the_wrong_number_of_rows_fails_callers_not_the_batcher() -> None:
    model = Model(lambda x: x.sum(axis=1)[:-1])
    batcher = Batcher(Batch(), model)
    results = await asyncio.gather(
        *(batcher.submit(rows(2)) for _ in range(4)), return_exceptions=True
    )
    assert all(isinstance(r, ValueError) and "rows" in str(r) for r in results)
    model.fn = lambda x: x.sum(axis=1)
    assert (await batcher.submit(rows(1))).tolist() == [3.0]


async def test_rows_that_cannot_be_stacked_are_isolated_too() -> None:
    batcher = Batcher(Batch(), Model())
    narrow, wide = await asyncio.gather(
        batcher.submit(rows(1, 1.0, 3)), batcher.submit(rows(1, 1.0, 4))
    )
    assert (narrow.tolist(), wide.tolist()) == ([3.0], [4.0])


async def test_submit_rejects_rows_that_are_not_a_2d_array_with_rows() -> None:
    batcher = Batcher(Batch(), Model())
    for bad in (np.ones(3), np.ones((0, 3))):
        with pytest.raises(ValueError):
            await batcher.submit(bad)


# -- overload and cancellation ---------------------------------------------------------------


async def test_a_full_queue_sheds_at_once() -> None:
    model = Model(gated=True)
    batcher = Batcher(Batch(max_size=4, max_wait="1s", max_queue=8, adaptive=False), model)
    running = [spawn(batcher.submit(rows(1, i))) for i in range(4)]
    queued = [spawn(batcher.submit(rows(1, i))) for i in range(4, 11)]
    await until(lambda: batcher.stats().queued_rows == 7 and model.sizes == [4])
    with pytest.raises(QueueFull):  # 7 + 2 > 8: refused without waiting for the model
        await batcher.submit(rows(2))
    queued.append(spawn(batcher.submit(rows(1, 11))))
    await until(lambda: batcher.stats().queued_rows == 8)
    with pytest.raises(QueueFull):
        await batcher.submit(rows(1))
    assert batcher.stats().shed == 2
    model.gate.set()
    results = await asyncio.gather(*running, *queued)
    assert [r[0] for r in results] == [3.0 * i for i in range(12)]
    assert model.sizes == [4, 4, 4]


async def test_a_cancelled_queued_caller_gives_back_its_rows() -> None:
    model = Model(gated=True)
    batcher = Batcher(Batch(max_wait="1ms"), model)
    first = spawn(batcher.submit(rows(1, 1.0)))
    await until(lambda: model.sizes == [1])
    keep, drop, keep_too = (spawn(batcher.submit(rows(2, v))) for v in (2.0, 7.0, 3.0))
    await until(lambda: batcher.stats().queued_rows == 6)
    drop.cancel()
    await until(lambda: batcher.stats().queued_rows == 4)
    model.gate.set()
    assert [(await t).tolist() for t in (first, keep, keep_too)] == [[3.0], [6.0] * 2, [9.0] * 2]
    assert drop.cancelled()
    assert model.sizes == [1, 4]
    assert not (model.batches[1] == 7.0).any()  # the cancelled rows never reached the model
    assert batcher.stats().cancelled == 1


async def test_a_caller_cancelled_mid_run_loses_only_its_own_result() -> None:
    # Ray #41057: set_result on a cancelled caller's future stopped the batching loop.
    model = Model(gated=True)
    batcher = Batcher(Batch(max_wait="50ms"), model)
    tasks = [spawn(batcher.submit(rows(1, v))) for v in (1.0, 2.0, 3.0)]
    await until(lambda: model.sizes == [3])
    tasks[1].cancel()
    await until(lambda: batcher.stats().cancelled == 1)
    model.gate.set()
    assert (await tasks[0]).tolist() == [3.0]
    assert (await tasks[2]).tolist() == [9.0]
    assert tasks[1].cancelled()
    assert (await batcher.submit(rows(1, 4.0))).tolist() == [12.0]


async def test_a_caller_cancelled_at_its_deadline_leaves_the_deadline_watch_running() -> None:
    """Cancelled in the loop iteration where the deadline timer fires, before it: the item is
    still queued (its caller resumes later) but its future is done. The watch must skip it,
    not fail on it and stop watching the deadlines behind it."""
    model = Model(gated=True)
    batcher = Batcher(Batch(max_wait="1ms", adaptive=False), model)
    running = spawn(batcher.submit(rows(1, 1.0)))
    await until(lambda: model.sizes == [1])
    start = time.monotonic()
    doomed = spawn(batcher.submit(rows(1, 2.0), deadline=start + 0.2))
    later = spawn(batcher.submit(rows(1, 3.0), deadline=start + 0.5))
    await until(lambda: batcher.stats().queued_rows == 2)
    asyncio.get_running_loop().call_later(0.15 - (time.monotonic() - start), doomed.cancel)
    time.sleep(max(0.0, 0.3 - (time.monotonic() - start)))  # noqa: ASYNC251 - both timers due
    await until(later.done, within=2.0)  # failed at its deadline while the run is still held
    with pytest.raises(ExpiredInQueue):
        await later
    assert doomed.cancelled()
    model.gate.set()
    assert (await running).tolist() == [3.0]
    assert model.sizes == [1]
    assert (batcher.stats().queued_rows, batcher.stats().cancelled) == (0, 1)


async def test_a_storm_of_cancellations_leaves_the_batcher_serving() -> None:
    # Ray #50046: a batched deployment got stuck for good after client cancellations.
    def slow(batch: Rows) -> Rows:
        time.sleep(0.001)
        return batch.sum(axis=1)

    with ThreadPoolExecutor(max_workers=1) as pool:
        batcher = Batcher(Batch(max_size=8, max_wait="1ms"), in_executor(slow, pool))
        tasks = [spawn(batcher.submit(rows(1 + i % 3, i))) for i in range(120)]
        for _ in range(5):
            await asyncio.sleep(0)
            for task in tasks[::3]:
                task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, result in enumerate(results):
            if not isinstance(result, asyncio.CancelledError):
                assert result.tolist() == [3.0 * i] * (1 + i % 3)
        async with asyncio.timeout(2):
            assert (await batcher.submit(rows(1, 2.0))).tolist() == [6.0]
        await batcher.aclose()
    stats = batcher.stats()
    assert stats.cancelled >= 40
    assert (stats.queued_rows, stats.running) == (0, False)


# -- lifecycle and observation ---------------------------------------------------------------


async def test_aclose_drains_queued_and_running_items_then_refuses_new_ones() -> None:
    await Batcher(Batch(), Model()).aclose()  # never used: nothing to drain
    model = Model(gated=True)
    batcher = Batcher(Batch(max_wait="1s"), model)
    running = spawn(batcher.submit(rows(1, 1.0)))
    await until(lambda: model.sizes == [1])
    queued = spawn(batcher.submit(rows(1, 2.0)))
    await until(lambda: batcher.stats().queued_rows == 1)
    closing = spawn(batcher.aclose())
    await until(lambda: batcher._closing)
    with pytest.raises(BatcherClosed):
        await batcher.submit(rows(1))
    model.gate.set()
    await closing
    assert (running.result().tolist(), queued.result().tolist()) == ([3.0], [6.0])


class Recorder(BatchObserver):
    def __init__(self) -> None:
        self.formed: list[tuple[int, int, float, int]] = []
        self.ran: list[tuple[int, int, float, BaseException | None]] = []
        self.rejected_rows: list[int] = []

    def batch_formed(self, rows: int, items: int, oldest_wait: float, queued_rows: int) -> None:
        self.formed.append((rows, items, oldest_wait, queued_rows))

    def batch_ran(self, rows: int, items: int, seconds: float, error: BaseException | None) -> None:
        self.ran.append((rows, items, seconds, error))

    def rejected(self, rows: int, queued_rows: int) -> None:
        self.rejected_rows.append(rows)
        raise RuntimeError("a broken metrics hook must not fail requests")


async def test_observer_sees_each_batch_once_and_cannot_break_requests() -> None:
    recorder = Recorder()
    model = Model(gated=True)
    batcher = Batcher(Batch(max_size=4, max_queue=4, max_wait="10ms"), model, observer=recorder)
    tasks = [spawn(batcher.submit(rows(2))) for _ in range(2)]  # fills one batch of 4 rows
    await until(lambda: model.sizes == [4])
    tasks += [spawn(batcher.submit(rows(2))) for _ in range(2)]
    await until(lambda: batcher.stats().queued_rows == 4)
    with pytest.raises(QueueFull):
        await batcher.submit(rows(1))
    model.gate.set()
    await asyncio.gather(*tasks)
    assert [(r, i, q) for r, i, _, q in recorder.formed] == [(4, 2, 0), (4, 2, 0)]
    assert all(wait >= 0 for _, _, wait, _ in recorder.formed)
    assert [(r, i, e) for r, i, _, e in recorder.ran] == [(4, 2, None), (4, 2, None)]
    assert recorder.rejected_rows == [1]
    stats = batcher.stats()
    assert (stats.batches, stats.rows, stats.items, stats.max_batch_rows) == (2, 8, 4, 4)
    assert stats.mean_batch_rows == 4.0
