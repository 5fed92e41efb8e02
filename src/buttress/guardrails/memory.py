"""``memory://`` guardrail counts: one process, exact, the same arithmetic as the Redis script.

- Fixed window: per key ``[window index, used]``; windows are aligned to the epoch
  (``index = now // window``) and a key whose index is stale starts again from 0.
- Sliding window: per key an exact log of timestamps and costs (deques, oldest first) and its
  running sum. One batch shares one timestamp, so its admissions for a key merge into one entry.
  An entry stops counting once ``timestamp <= now - window``: use is the sum over
  ``(now - window, now]``, and a request is admitted only if ``use + cost <= limit``. Every
  interval of length ``window`` therefore holds at most ``limit`` (look at its last admission).

Time is in integer microseconds from an injectable clock, made monotonic (a clock that steps
back cannot reopen a window). Expired state is swept once per window length, so idle keys do
not accumulate. Not thread-safe: it lives on the event loop of the service that owns it.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Sequence

from buttress.guardrails.decision import Check, StoredUsage
from buttress.guardrails.policy import Guardrail, SlidingWindow


class _Fixed:
    """One key's count in the current epoch-aligned window."""

    __slots__ = ("index", "used", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.index = -1
        self.used = 0

    def refresh(self, now: int) -> None:
        current = now // self.window
        if self.index < current:  # a later index stays: the clock never reopens a window
            self.index, self.used = current, 0

    def add(self, now: int, cost: int) -> None:
        self.used += cost

    def used_at(self, now: int) -> int:
        return self.used if self.index >= now // self.window else 0


class _Sliding:
    """One key's exact log, oldest first, and its running sum.

    Two parallel deques of ints rather than one of ``[timestamp, cost]`` pairs: ints are not
    tracked by the garbage collector, pairs are, and at thousands of admissions a second a
    window's pairs made every full collection measurably longer.
    """

    __slots__ = ("costs", "times", "used", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.times: deque[int] = deque()
        self.costs: deque[int] = deque()
        self.used = 0

    def refresh(self, now: int) -> None:
        times, costs, cutoff = self.times, self.costs, now - self.window
        while times and times[0] <= cutoff:
            times.popleft()
            self.used -= costs.popleft()

    def add(self, now: int, cost: int) -> None:
        self.used += cost
        if self.times and self.times[-1] == now:  # one batch, one timestamp: one entry
            self.costs[-1] += cost
        else:
            self.times.append(now)
            self.costs.append(cost)

    def used_at(self, now: int) -> int:
        cutoff = now - self.window
        expired = sum(c for at, c in zip(self.times, self.costs, strict=True) if at <= cutoff)
        return self.used - expired


_State = _Fixed | _Sliding


class MemoryStore:
    def __init__(self, guards: Sequence[Guardrail], clock: Callable[[], float]) -> None:
        self._clock = clock
        self._kind: list[type[_State]] = [
            _Sliding if isinstance(g, SlidingWindow) else _Fixed for g in guards
        ]
        self._window = [g.window_us for g in guards]
        self._declared = [g.limit_units for g in guards]
        self._limit = list(self._declared)
        self._states: list[dict[str | None, _State]] = [{} for _ in guards]
        self._next_sweep = [0] * len(guards)
        self._sweep_due = 0
        self._last_now = 0

    def _now(self) -> int:
        now = max(self._last_now, round(self._clock() * 1_000_000))
        self._last_now = now
        return now

    async def admit(self, items: Sequence[Sequence[Check]]) -> list[int]:
        return self.admit_now(items)

    def admit_now(self, items: Sequence[Sequence[Check]]) -> list[int]:
        """The synchronous core of :meth:`admit` (the in-process hot path needs no await)."""
        now = self._now()
        if now >= self._sweep_due:
            self._sweep(now)
        limits, all_states, kinds, windows = self._limit, self._states, self._kind, self._window
        out: list[int] = []
        for checks in items:
            refused = 0
            fits: list[tuple[_State, int]] = []
            for index, key, cost in checks:
                states = all_states[index]
                state = states.get(key)
                if state is None:
                    state = states[key] = kinds[index](windows[index])
                state.refresh(now)
                if state.used + cost > limits[index]:
                    refused |= 1 << index
                fits.append((state, cost))
            if not refused:
                for state, cost in fits:
                    state.add(now, cost)
            out.append(refused)
        return out

    def _sweep(self, now: int) -> None:
        """Drop the keys that hold no use, once per window length of each guardrail."""
        for index, states in enumerate(self._states):
            if now >= self._next_sweep[index]:
                for key in [key for key, state in states.items() if state.used_at(now) == 0]:
                    del states[key]
                self._next_sweep[index] = now + self._window[index]
        self._sweep_due = min(self._next_sweep, default=now)

    async def set_limit(self, index: int, name: str, limit: int | None) -> None:
        self._limit[index] = self._declared[index] if limit is None else limit

    async def usage(self, scan: int) -> list[StoredUsage]:
        now = self._now()
        return [
            StoredUsage(
                self._limit[index],
                heapq.nlargest(scan, ((k, s.used_at(now)) for k, s in states.items()), _by_use),
            )
            for index, states in enumerate(self._states)
        ]

    def key_count(self) -> int:
        """How many keys hold state (tests check that expired state is swept)."""
        return sum(len(states) for states in self._states)


def _by_use(entry: tuple[str | None, int]) -> int:
    return entry[1]
