"""The deadline rule, written once: a call must end by its own timeout or the request's
deadline, whichever comes first; the request's deadline is lowered, never raised, by the
client's ``X-Deadline-Ms``.

Times are on the event loop's clock (``loop.time()``).
"""

from __future__ import annotations

import math


def call_until(deadline: float, timeout: float | None, started: float) -> float:
    """When a call started at ``started`` with ``timeout`` (None: none of its own) must end."""
    if timeout is None:
        return deadline
    own = started + timeout
    return own if own < deadline else deadline


def caller_gave_up(deadline: float, until: float) -> bool:
    """A call bounded at ``until`` that timed out was cut by the request's deadline, not by
    its own timeout (see :func:`buttress.resilience.failures.counts_against_breaker`)."""
    return until >= deadline


class InvalidDeadline(ValueError):
    """``X-Deadline-Ms`` is not a finite, non-negative number of milliseconds."""


def requested_budget(header: str | None, default: float, cap: float) -> float:
    """The request's time budget in seconds: ``default``, lowered by the client's
    ``X-Deadline-Ms`` when given, never above ``cap``.

    A malformed header (``abc``, ``inf``, ``NaN``, a negative number, ``1e400``) is refused
    rather than ignored: a client that means to bound its wait and is silently given the full
    budget would wait longer than it thinks.
    """
    budget = default
    if header:  # absent or empty: the default
        try:
            requested = float(header)
        except ValueError:
            raise InvalidDeadline(f"X-Deadline-Ms must be a number of milliseconds, "
                                  f"not {header[:32]!r}") from None
        if not math.isfinite(requested) or requested < 0:
            raise InvalidDeadline(f"X-Deadline-Ms must be finite and >= 0, not {header[:32]!r}")
        budget = requested / 1000.0
    return min(budget, cap)
