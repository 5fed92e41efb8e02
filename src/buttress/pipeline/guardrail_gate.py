"""Binds a service's :class:`~buttress.guardrails.Guardrails` into the pipeline.

A guardrail judges what the service is about to hand out: ``measure(request, response)``
sees the response the responder built (an ``Output`` or a dict). When a request is refused,
the pipeline rebuilds the response from the model stages' fallbacks (the default
prediction), so it never overspends.

Admissions of the requests that reach this point in the same event-loop iteration go to the
backend together, in one call (one Lua script on Redis): a Redis round trip per request would
cost more than a request's whole budget (docs/performance.md); the coalescing is the cache's and the
feature store's (:mod:`buttress.backends.coalesce`). On ``memory://`` a call costs a few
microseconds and is made directly.

A background task copies budget usage into gauges every few seconds, so a Prometheus scrape
never waits on Redis; keyed guardrails export their top keys only (bounded cardinality).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from buttress.backends.coalesce import TickBatcher
from buttress.guardrails import Decision, Guardrails
from buttress.resilience.categories import Category

if TYPE_CHECKING:
    from buttress.observability.metrics import ServiceMetrics

log = logging.getLogger("buttress.guardrails")

USAGE_REFRESH_SECONDS = 5.0
TOP_KEYS = 10


class GuardrailGate:
    def __init__(self, guardrails: Guardrails, metrics: ServiceMetrics) -> None:
        self.guardrails = guardrails
        self.metrics = metrics
        self._batched = guardrails.url.is_redis
        self._admissions: TickBatcher[tuple[Any, Any], Decision] = TickBatcher(
            lambda items: self.guardrails.admit_many(items))  # looked up per batch
        self._refresher: asyncio.Task[None] | None = None
        self._trips = {g.name: metrics.guardrail_trips.labels(metrics.service, g.name)
                       for g in guardrails.guards}

    async def admit(self, request: Any, response: Any) -> Decision:
        if not self._batched:
            decision = await self.guardrails.admit(request, response)
        else:
            decision = await self._admissions.submit((request, response))
        if decision.category is Category.GUARDRAIL_EXCEEDED:  # over budget; not an outage
            for name in decision.refused_by:
                self._trips[name].inc()
        return decision

    def out_of_time(self) -> Decision:
        """The decision when the request's deadline passed before the backend answered:
        like an outage, each guardrail's fail policy decides."""
        closed = tuple(g.name for g in self.guardrails.guards if g.fail == "closed")
        return Decision(admitted=not closed, refused_by=closed, unavailable=True,
                        error=None)

    # -- usage gauges ----------------------------------------------------------------------

    def start(self) -> None:
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_usage())

    async def _refresh_usage(self) -> None:
        while True:
            try:
                self.export_usage(await self.guardrails.snapshot(top=TOP_KEYS))
            except Exception as error:  # the backend may be down; the gauges just go stale
                log.debug("guardrail usage refresh failed: %s", error)
            await asyncio.sleep(USAGE_REFRESH_SECONDS)

    def export_usage(self, snapshots: list[Any]) -> None:
        used, remaining = self.metrics.guardrail_used, self.metrics.guardrail_remaining
        service = self.metrics.service
        for snapshot in snapshots:
            for gauge in (used, remaining):
                # drop last round's top keys so the label set stays bounded
                for labels in list(gauge._metrics):  # prometheus_client has no public filter
                    if labels[:2] == (service, snapshot.name):
                        gauge.remove(*labels)
            for usage in snapshot.usage:
                key = usage.key if usage.key is not None else ""
                used.labels(service, snapshot.name, key).set(usage.used)
                remaining.labels(service, snapshot.name, key).set(usage.remaining)

    async def aclose(self) -> None:
        await self._admissions.aclose()
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher

