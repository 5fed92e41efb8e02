"""``buttress.pipeline.stepping``: a stepped coroutine keeps running in the task that stepped it."""

from __future__ import annotations

import asyncio

import pytest

from buttress.pipeline.stepping import Finished, Resumed, first_step


async def returns_at_once(value: int) -> int:
    return value


async def test_a_coroutine_that_never_suspends_finishes_on_its_first_step() -> None:
    step = first_step(returns_at_once(7))
    assert isinstance(step, Finished)
    assert step.value == 7


async def test_a_suspended_coroutine_resumes_in_the_task_that_stepped_it() -> None:
    seen: list[asyncio.Task[object] | None] = []

    async def records_its_task() -> str:
        seen.append(asyncio.current_task())
        await asyncio.sleep(0.01)
        seen.append(asyncio.current_task())
        return "done"

    step = first_step(records_its_task())
    assert isinstance(step, Resumed)
    assert await step == "done"
    assert seen == [asyncio.current_task()] * 2


async def test_a_timeout_entered_inside_the_coroutine_cancels_only_that_coroutine() -> None:
    """What redis-py does: enter a timeout bound to the current task, then suspend."""

    async def with_its_own_timeout() -> str:
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)
        except TimeoutError:
            return "timed out inside"
        return "not reached"

    step = first_step(with_its_own_timeout())
    assert isinstance(step, Resumed)
    assert await step == "timed out inside"
    await asyncio.sleep(0.02)  # and this task was not cancelled afterwards


async def test_exceptions_of_either_step_propagate() -> None:
    async def fails_at_once() -> None:
        raise KeyError("first")

    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise KeyError("later")

    with pytest.raises(KeyError, match="first"):
        first_step(fails_at_once())
    step = first_step(fails_later())
    with pytest.raises(KeyError, match="later"):
        await step


async def test_cancelling_the_task_reaches_the_resumed_coroutine() -> None:
    cleaned_up = asyncio.Event()

    async def waits_forever() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned_up.set()

    async def runner() -> None:
        await first_step(waits_forever())  # type: ignore[misc]

    task = asyncio.create_task(runner())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned_up.is_set()

