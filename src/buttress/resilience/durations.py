"""Human durations (``"5ms"``, ``"2s"``, ``0.05``) parsed once, at declaration time."""

from __future__ import annotations

import re

_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|µs|ms|s|min|m|h)\s*$")

Duration = float | int | str


def seconds(value: Duration, *, name: str = "duration") -> float:
    """Return ``value`` in seconds; numbers are already seconds.

    >>> seconds("250ms"), seconds(2), seconds("1.5s")
    (0.25, 2.0, 1.5)
    """
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected a duration, got a bool")
    if isinstance(value, int | float):
        result = float(value)
    else:
        match = _PATTERN.match(value)
        if match is None:
            raise ValueError(f"{name}: {value!r} is not a duration like '50ms', '2s' or 0.05")
        result = float(match.group(1)) * _UNITS[match.group(2)]
    if result < 0:
        raise ValueError(f"{name}: must not be negative, got {value!r}")
    return result


def as_ms(elapsed: float) -> float:
    """``elapsed`` seconds as milliseconds to the microsecond (truncated), for events.

    ``round(x * 1000, 3)`` costs ≈ 0.8 µs (it goes through decimal formatting); this ≈ 0.25,
    and a request records several of them.
    """
    return int(elapsed * 1_000_000) / 1000
