"""Guardrail declarations: what a service may hand out per window, and what happens when the
backend that keeps count is unreachable.

``FixedWindow`` and ``SlidingWindow`` are small frozen policies, validated when declared::

    bt.SlidingWindow("discount_value", limit=50_000, window="1min", measure=discount_value)
    bt.FixedWindow("discounted_orders_per_user", limit=3, window="1h",
                   key=lambda request: str(request.user.id))

Costs are counted in millionths (:data:`UNITS`): a measure's float is rounded to the nearest
0.000001 and every sum is an exact integer, in Python and in Redis's Lua (whose numbers are
doubles, exact for integers below 2**53 — hence :data:`MAX_LIMIT`). Monetary values with a few
decimals are therefore counted exactly: 1,000 costs of 0.1 fit a limit of 100.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from buttress.resilience.durations import Duration, seconds

Measure = Callable[[Any, Any], float]
"""``(request, prediction) -> cost``; ``None`` in a declaration means each request costs 1."""
KeyOf = Callable[[Any], "str | None"]
"""``(request) -> key``; ``None`` as the key means the guardrail does not apply to it."""
FailPolicy = Literal["closed", "open"]

UNITS = 1_000_000
"""Costs and limits are counted in millionths, so sums are exact integers everywhere."""
MAX_LIMIT = 9e9
"""Largest limit: 9e9 * UNITS stays below 2**53, where Lua's doubles stop being exact."""

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def to_units(value: float, *, what: str = "cost") -> int:
    """``value`` in millionths, rounded to nearest; a negative or non-finite value is an error."""
    if not value >= 0 or math.isinf(value):  # `not >=` also catches NaN
        raise ValueError(f"guardrail {what} must be a finite number >= 0, got {value!r}")
    return round(value * UNITS)


@dataclass(frozen=True, repr=False)
class Guardrail:
    """Fields shared by both window kinds; declare a :class:`FixedWindow` or a
    :class:`SlidingWindow`."""

    kind: ClassVar[str] = ""

    name: str
    limit: float
    window: Duration
    measure: Measure | None = None
    key: KeyOf | None = None
    fail: FailPolicy = "closed"
    window_seconds: float = field(init=False, compare=False)
    """``window`` parsed, in seconds."""

    def __post_init__(self) -> None:
        if type(self) is Guardrail:
            raise TypeError("declare a FixedWindow or a SlidingWindow")
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"guardrail name {self.name!r} must be 1-64 characters of letters, digits, _ . -"
            )
        if isinstance(self.limit, bool) or not isinstance(self.limit, int | float):
            raise TypeError(f"guardrail {self.name}: limit must be a number, got {self.limit!r}")
        if not 0 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"guardrail {self.name}: limit must be in [0, {MAX_LIMIT:g}]")
        window = seconds(self.window, name=f"guardrail {self.name} window")
        if window * 1e6 < 1:
            raise ValueError(f"guardrail {self.name}: window must be at least 1us")
        object.__setattr__(self, "window_seconds", window)
        for role in ("measure", "key"):
            value = getattr(self, role)
            if value is not None and not callable(value):
                raise TypeError(f"guardrail {self.name}: {role} must be callable or None")
        if self.fail not in ("closed", "open"):
            raise ValueError(f"guardrail {self.name}: fail must be 'closed' or 'open'")

    @property
    def window_us(self) -> int:
        return max(1, round(self.window_seconds * 1e6))

    @property
    def limit_units(self) -> int:
        return to_units(self.limit, what="limit")

    def __repr__(self) -> str:
        parts = [repr(self.name), f"limit={self.limit!r}", f"window={self.window!r}"]
        if self.measure is not None:
            parts.append(f"measure={_callable_name(self.measure)}")
        if self.key is not None:
            parts.append(f"key={_callable_name(self.key)}")
        if self.fail != "closed":
            parts.append(f"fail={self.fail!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


@dataclass(frozen=True, repr=False)
class FixedWindow(Guardrail):
    """At most ``limit`` per window aligned to the epoch (a "1min" window is a clock minute).

    Cheap (one counter per key), but a burst at the end of one window and another at the start
    of the next both fit: **across a window edge it admits up to 2x its limit** within one
    window's length. Use :class:`SlidingWindow` where that matters.
    """

    kind: ClassVar[str] = "fixed"


@dataclass(frozen=True, repr=False)
class SlidingWindow(Guardrail):
    """At most ``limit`` within *any* interval of length ``window``: exact, at the cost of
    keeping a log of recent admissions (one entry per key per checked batch)."""

    kind: ClassVar[str] = "sliding"


def _callable_name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))
