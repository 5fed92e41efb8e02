"""The door: at most ``limit`` requests in the pipeline, a short waiting room for the next
ones, and the rest answered at once.

Shedding every request past the limit at once looks like the obvious thing, and measured
badly (docs/performance.md, "Overload and admission control"): a shed answer still costs
the HTTP exchange, validation and the fallback response, and clients that retry at once come
straight back, so the loop filled with shed requests and the admitted ones timed out anyway.
A request that *waits* costs nothing but a future. So a request past the limit waits for a
slot, in arrival order, as long as its expected wait leaves it at least half of its deadline
for the pipeline; one that would wait longer is answered at once (``overloaded``). Its
expected wait is the queue ahead of it times the mean time a request holds a slot, divided by
the number of slots.

The slots are counted here, not by the request tally: the limit is about the work in the
pipeline, and waiting requests are not work.
"""

from __future__ import annotations

import asyncio
from collections import deque

from buttress.resilience.admission import ConcurrencyLimit

WAIT_SHARE = 0.5
"""The share of a request's deadline it may spend waiting for a slot."""


class Door:
    def __init__(self, limit: ConcurrencyLimit) -> None:
        self.limit = limit
        self.inside = 0
        """Requests holding a slot (in the pipeline now)."""
        self._waiting: deque[asyncio.Future[None]] = deque()

    def enter(self) -> bool:
        """Take a slot if one is free (the hot path: a comparison and an addition)."""
        if self.inside < self.limit.limit and not self._waiting:
            self.inside += 1
            return True
        return False

    async def wait(self, budget: float) -> bool:
        """Wait for a slot for at most ``WAIT_SHARE`` of ``budget`` seconds. False: the
        request should be answered as overloaded (at once, if its wait would be too long)."""
        allowed = budget * WAIT_SHARE
        expected = (len(self._waiting) + 1) * self.limit.mean_latency / max(self.limit.limit, 1)
        if expected > allowed:
            return False
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(slot)
        try:
            async with asyncio.timeout(allowed):
                await slot
        except TimeoutError:
            if slot.done() and not slot.cancelled():
                self.leave()  # handed a slot just as its wait ran out: pass it on
            return False
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():
                self.leave()  # handed a slot just as it gave up: pass it on
            raise
        finally:
            if not slot.done():
                slot.cancel()
        return True

    def leave(self) -> None:
        """Give the slot back: to the longest-waiting request, if the limit allows."""
        self.inside -= 1
        waiting = self._waiting
        while waiting and self.inside < self.limit.limit:
            slot = waiting.popleft()
            if not slot.done():
                self.inside += 1
                slot.set_result(None)

    @property
    def waiting(self) -> int:
        return len(self._waiting)
