"""Judging a new model version by the service's example before it is switched to.

A version whose example fails at warm-up is not served. Two kinds of failure differ:

- **broken**: the model raised, or answered with an error (a wrong input shape, a bad
  file that loaded): trying again gives the same answer, so the version is refused for good;
- **slow**: every failure was the model being too slow for its timeout, or a shed for overload.
  On a loaded machine (another job on the cores, a burst of traffic) the first calls of a
  freshly loaded model can miss a tight timeout although the version is fine, and refusing it
  for good would leave the replica on the old version while the alias names the new one
  until a restart. So a slow warm-up is tried again at the next heartbeat, and only a version
  slow at :data:`SLOW_TRIES` warm-ups in a row (about a minute) is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from buttress.resilience.categories import Category

if TYPE_CHECKING:
    from buttress.pipeline.runtime import Answer

SLOW_CATEGORIES = frozenset({Category.MODEL_TIMEOUT, Category.OVERLOADED})
SLOW_TRIES = 6
"""Warm-ups in a row a version may be too slow at before it is refused."""


@dataclass(frozen=True)
class WarmUpProblem:
    """Why the example failed at warm-up; ``slow`` when only time was the matter."""

    detail: str
    slow: bool


def judge(answers: Sequence[Answer], stage: str) -> WarmUpProblem | None:
    """None if every answer of the last warm-up round came from ``stage``'s model without
    a fallback; else the first problem, and whether every problem was slowness."""
    problems: list[tuple[str, bool]] = []
    for answer in answers:
        failed = [f for f in answer.context.fallbacks if f.stage == stage]
        if answer.status == 200 and not failed:
            continue
        why = failed[0] if failed else answer.context.error
        if why is None:
            problems.append((f"status {answer.status}", False))
        else:
            problems.append((f"{why.category.value}: {why.detail}",
                             why.category in SLOW_CATEGORIES))
    if not problems:
        return None
    return WarmUpProblem(f"the example failed at warm-up ({problems[0][0]})",
                         slow=all(slow for _, slow in problems))
