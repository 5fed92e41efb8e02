"""What a guardrail check returns, what a snapshot reports, and the one seam a backend fills.

The evaluator turns requests into :data:`Check` tuples (guardrail index, key, cost in units);
a :class:`Store` admits them — all-or-nothing per request, in order — and answers with one
refusal bit mask per request. Memory and Redis implement the same seam and the same arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from buttress.resilience.categories import Category

Check = tuple[int, "str | None", int]
"""``(guardrail index, key or None when global, cost in units > 0)``."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one request.

    ``refused_by`` names the guardrails that refused it: over budget, or — when ``unavailable``
    — guardrails whose backend could not be reached and whose fail policy is "closed".
    ``error`` is set when a guardrail's own ``measure``/``key`` raised (a bug): the request is
    refused, since its cost is unknown.
    """

    admitted: bool
    refused_by: tuple[str, ...] = ()
    unavailable: bool = False
    error: str | None = None

    @property
    def category(self) -> Category | None:
        """The error category to record, or ``None`` for a plain admission."""
        if self.error is not None:
            return Category.INTERNAL
        if self.unavailable:
            return Category.GUARDRAIL_UNAVAILABLE
        if self.refused_by:
            return Category.GUARDRAIL_EXCEEDED
        return None


ADMITTED = Decision(admitted=True)


@dataclass(frozen=True, slots=True)
class Usage:
    """Use of one guardrail (``key`` None) or of one of its keys in the current window."""

    key: str | None
    used: float
    remaining: float


@dataclass(frozen=True, slots=True)
class GuardrailSnapshot:
    """One guardrail now. ``usage`` holds one entry for a global guardrail, and the most-used
    keys (at most ``top``) for a keyed one — never every key, so its size stays bounded."""

    name: str
    kind: str
    window: float
    limit: float
    keyed: bool
    usage: tuple[Usage, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "window_seconds": self.window,
            "limit": self.limit,
            "keyed": self.keyed,
            "usage": [{"key": u.key, "used": u.used, "remaining": u.remaining} for u in self.usage],
        }


@dataclass(frozen=True, slots=True)
class StoredUsage:
    """What a store reports for one guardrail, in units: its limit in force and the use of the
    keys it scanned (one ``None`` key for a global guardrail)."""

    limit: int
    used: list[tuple[str | None, int]]


class Store(Protocol):
    """Where guardrail counts live. Every method is one round trip at most."""

    async def admit(self, items: Sequence[Sequence[Check]]) -> list[int]:
        """Admit each item's checks in order, all-or-nothing per item. Returns, per item, the
        bit mask (``1 << guardrail index``) of the guardrails that refused it; 0 = admitted."""
        ...

    async def set_limit(self, index: int, name: str, limit: int | None) -> None:
        """Override guardrail ``index``'s limit (units); ``None`` restores the declared one."""
        ...

    async def usage(self, scan: int) -> list[StoredUsage]:
        """Per guardrail, its limit and use now; keyed ones scan at most ``scan`` keys."""
        ...
