"""Steady, bounded load on the two-zone cluster and what it saw, as figures.

``concurrency`` workers share one schedule of ``rate`` requests a second for ``duration``
seconds (a worker that falls behind does not catch up in a burst), cycling over ``users``
users; every answer is kept with its times, status, replica and fallback categories.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

# what a zone outage may cost; refusals by the guardrail are the service working
EXPECTED_FALLBACK = "guardrail_exceeded"


@dataclass(frozen=True)
class Answer:
    sent: float  # seconds since the load started
    done: float
    user: str
    status: int  # 0: no HTTP answer at all
    replica: str = ""
    granted: float = 0.0
    fallbacks: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.status != 200

    @property
    def degraded(self) -> bool:
        """Served with a fallback that an outage caused (not a guardrail's refusal)."""
        return any(category != EXPECTED_FALLBACK for category in self.fallbacks)

    @property
    def zone(self) -> str:
        return self.replica[:1]

    @property
    def admitted(self) -> bool:
        return self.status == 200 and self.granted > 0 and not self.fallbacks


@dataclass
class Load:
    url: str
    rate: float
    concurrency: int
    duration: float
    users: int
    answers: list[Answer] = field(default_factory=list)
    started: float = 0.0

    def now(self) -> float:
        return time.monotonic() - self.started

    async def run(self) -> list[Answer]:
        self.started = time.monotonic()
        sequence = itertools.count()
        limits = httpx.Limits(max_connections=self.concurrency,
                              max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(base_url=self.url, limits=limits, timeout=5.0) as client:
            await asyncio.gather(*(self._worker(client, sequence)
                                   for _ in range(self.concurrency)))
        return self.answers

    async def _worker(self, client: httpx.AsyncClient, sequence: itertools.count[int]) -> None:
        while True:
            n = next(sequence)
            slot = n / self.rate
            if slot >= self.duration:
                return
            await asyncio.sleep(max(0.0, slot - self.now()))
            user = f"u{n % self.users}"
            sent = self.now()
            try:
                response = await client.post("/predict", json={"user": user})
            except httpx.HTTPError:
                self.answers.append(Answer(sent, self.now(), user, 0))
                continue
            body = response.json() if response.status_code == 200 else {}
            fallbacks = tuple(filter(None, response.headers.get("x-fallback", "").split(",")))
            self.answers.append(Answer(sent, self.now(), user, response.status_code,
                                       body.get("replica", ""), body.get("granted", 0.0),
                                       fallbacks))


@dataclass(frozen=True)
class Figures:
    requests: int
    failed_while_a_disappears: int
    seconds_until_all_from_b_without_fallbacks: float
    degraded_while_a_disappears: int
    seconds_until_b_promoted: float
    admitted: int
    users_at_limit: int
    guardrail_overshoot: int
    failed_after_rejoin: int
    seconds_until_a_answers_again: float
    seconds_until_a_redis_in_sync: float

    def report(self) -> str:
        return "\n".join(f"  {name.replace('_', ' ')}: {value:.2f}" if isinstance(value, float)
                         else f"  {name.replace('_', ' ')}: {value}"
                         for name, value in vars(self).items())


def figures(answers: list[Answer], *, cut: float, restore: float, promoted: float,
            a_synced: float, limit: int) -> Figures:
    """The figures of one run; times are seconds since the load started."""
    outage = [a for a in answers if cut <= a.done and a.sent < restore]
    bad = [a for a in outage if a.failed or a.degraded or a.zone != "b"]
    clean_from = max((a.done for a in bad), default=cut)
    after = [a for a in answers if a.sent >= restore]
    a_back = min((a.done for a in after if a.zone == "a" and not a.failed and not a.degraded),
                 default=float("inf"))
    per_user = Counter(a.user for a in answers if a.admitted)
    refused = {a.user for a in answers if EXPECTED_FALLBACK in a.fallbacks}
    return Figures(
        requests=len(answers),
        failed_while_a_disappears=sum(a.failed for a in outage),
        seconds_until_all_from_b_without_fallbacks=clean_from - cut,
        degraded_while_a_disappears=sum(a.degraded for a in outage if not a.failed),
        seconds_until_b_promoted=promoted - cut,
        admitted=sum(per_user.values()),
        users_at_limit=len(refused),
        guardrail_overshoot=sum(max(0, count - limit) for count in per_user.values()),
        failed_after_rejoin=sum(a.failed for a in after),
        seconds_until_a_answers_again=a_back - restore,
        seconds_until_a_redis_in_sync=a_synced - restore,
    )
