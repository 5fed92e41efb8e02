"""A fresh promotion under watch, judged by the model stage's rollback rules.

``pipeline/follow.py`` makes one when its replica switches to a version that a promotion
brought, and asks :meth:`Promotion.verdict` every ``RULE_CHECK_EVERY`` seconds until the rules'
watch is over or one of them is broken (then it rolls the registry back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from buttress.pipeline.stage import StageRuntime
    from buttress.pipeline.tally import Tally
    from buttress.registry import Registry
    from buttress.registry.rollback_rule import RollbackRule

EXPIRED: Any = object()
"""The verdict once every rule's watch is over with none broken."""


@dataclass
class Promotion:
    """The version judged, the one it replaced, and the tallies compared."""

    stage: StageRuntime
    registry: Registry
    version: str
    previous_version: str
    new: Tally
    previous: Tally
    promoted_at: float
    """``time.monotonic()`` when this replica heard of the promotion."""

    def verdict(self, now: float) -> tuple[RollbackRule, float, float] | Any:
        """The first rule the new version breaks (rule, new value, previous value);
        :data:`EXPIRED` once every rule's watch is over; None while nothing is decided."""
        watching = False
        for rule in self.stage.spec.rollback:
            if now > self.promoted_at + rule.watch_seconds:
                continue
            watching = True
            new, old = self.new.value(rule), self.previous.value(rule)
            if new is None or old is None or min(new[1], old[1]) < rule.min_requests:
                continue
            if rule.breached(new[0], old[0]):
                return rule, new[0], old[0]
        return None if watching else EXPIRED
