"""Failure isolation: re-run a failed batch in halves so only its bad items get the error.

One item that makes the model raise must not fail its batch-mates. The failed batch is split
in two and each half re-run (before any new batch); a failing half is split again, until
each failing item is alone and receives the original exception. One bad item among ``n``
costs about ``2·⌈log2 n⌉`` extra runs, half of them failing.

A batch may fail ``4·⌈log2 n⌉`` retries, enough for a few bad items. Past that the model
itself is failing (e.g. a dead remote runner): the rest of the batch gets the error at once,
so such a batch costs at most ``1 + 4·⌈log2 n⌉`` runs (25 for 64 items), not ``2n``.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Budget:
    """Failed retries still allowed for the items of one batch (shared by all its halves)."""

    __slots__ = ("failures_left",)

    def __init__(self, items: int) -> None:
        self.failures_left = 4 * math.ceil(math.log2(items)) if items > 1 else 0


class Bisection(Generic[T]):
    """The halves of failed batches waiting to be re-run, depth first."""

    __slots__ = ("_groups",)

    def __init__(self) -> None:
        self._groups: deque[tuple[list[T], Budget]] = deque()

    def __bool__(self) -> bool:
        return bool(self._groups)

    def pop(self) -> tuple[list[T], Budget]:
        return self._groups.popleft()

    def failed(self, items: list[T], budget: Budget | None, retryable: bool) -> list[T]:
        """A run of ``items`` raised: queue its halves, or return the items to fail now.

        ``budget`` is ``None`` for a fresh batch (its first failure opens a budget) and the
        batch's budget for a retried half.
        """
        if budget is None:
            budget = Budget(len(items))
        else:
            budget.failures_left -= 1
        if budget.failures_left <= 0:
            doomed = list(items)
            for group, owner in self._groups:
                if owner is budget:
                    doomed += group
            self._groups = deque(entry for entry in self._groups if entry[1] is not budget)
            return doomed
        if len(items) <= 1 or not retryable:
            return items
        half = len(items) // 2
        self._groups.appendleft((items[half:], budget))
        self._groups.appendleft((items[:half], budget))
        return []
