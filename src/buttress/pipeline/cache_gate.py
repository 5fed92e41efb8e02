"""Binds a :class:`~buttress.cache.ResultCache` into the pipeline, for the whole response
(module level) or one stage's output (sub-module level).

The cache stores ``(value, fallbacks applied)``, and only when no fallback happened while
computing it: a fallback is right for the outage, not for the next ``ttl`` seconds. A
``cache_unavailable`` from a nested cache does not make an answer wrong, so it does not stop
the write. When concurrent identical requests share one computation (single-flight), the
fallbacks that computation applied are replayed into each waiter's context, so every response
carries its own honest ``X-Fallback``.

Stages of one level run concurrently on one request context, so while a stage's value is being
computed a sibling stage may record a fallback of its own. A stage cache therefore counts only
the fallbacks recorded under its stage's name: a sibling's failure neither stops the write nor
is replayed to requests that shared the computation (they ran their own sibling). The response
cache owns everything recorded while it computes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from buttress.cache import Cache, CacheStatus, ResultCache
from buttress.pipeline.context import AppliedFallback, RequestContext
from buttress.resilience.categories import Category

if TYPE_CHECKING:
    from buttress.observability.metrics import ServiceMetrics

HARMLESS = frozenset({Category.CACHE_UNAVAILABLE, Category.INPUT_CONTRACT})
"""Categories that do not make an answer unfit to cache."""

RESPONSE = "response"
"""The name of the module-level cache; any other name is the stage whose output it caches."""

HEADER = {CacheStatus.HIT: "hit", CacheStatus.SHARED: "hit", CacheStatus.MISS: "miss",
          CacheStatus.UNAVAILABLE: "miss"}


class _CacheMetrics:
    """The cache observer hooks bound to pre-labelled Prometheus counters."""

    def __init__(self, metrics: ServiceMetrics, name: str) -> None:
        labels = (metrics.service, name)
        self._hit = metrics.cache_lookups.labels(*labels, "hit")
        self._miss = metrics.cache_lookups.labels(*labels, "miss")
        self._set = metrics.cache_sets.labels(*labels)
        self._evicted = metrics.cache_evictions.labels(*labels)
        self._error = metrics.cache_errors.labels(*labels)

    def on_hit(self, count: int) -> None:
        self._hit.inc(count)

    def on_miss(self, count: int) -> None:
        self._miss.inc(count)

    def on_set(self, count: int) -> None:
        self._set.inc(count)

    def on_eviction(self) -> None:
        self._evicted.inc()

    def on_error(self, category: Category, error: BaseException) -> None:
        self._error.inc()


class CachedComputation:
    """One cache (``name`` is ``response`` or a stage name) wired to metrics and contexts."""

    def __init__(self, policy: Cache, *, service: str, name: str, default_url: str,
                 metrics: ServiceMetrics) -> None:
        self.name = name
        self._stage = None if name == RESPONSE else name
        self.cache = ResultCache(policy, namespace=service, scope=name,
                                   default_url=default_url,
                                   observer=_CacheMetrics(metrics, name))

    def key(self, payload: Any, model_version: str) -> str:
        return self.cache.key(payload, model_version)

    async def run(self, key: str, ctx: RequestContext,
                  compute: Callable[[], Awaitable[Any]], *, bypass: bool = False
                  ) -> tuple[Any, str]:
        """The value for ``key`` and the ``X-Cache`` word: ``hit``, ``miss`` or ``bypass``."""

        async def fill() -> tuple[Any, bool]:
            before = len(ctx.fallbacks)
            value = await compute()
            applied = ctx.fallbacks[before:]
            if self._stage is not None:
                applied = [f for f in applied if f.stage == self._stage]
            cacheable = all(f.category in HARMLESS for f in applied)
            return (value, [(f.stage, f.category.value, f.detail) for f in applied]), cacheable

        if bypass:
            pair, cacheable = await fill()
            if cacheable:
                await self.cache.set(key, pair)
            return pair[0], "bypass"
        lookup = await self.cache.get_or_compute(key, fill)
        if lookup.status is CacheStatus.UNAVAILABLE:
            ctx.record(Category.CACHE_UNAVAILABLE, f"cache:{self.name}")
        value, applied = lookup.value  # stored as the same pair; a list once it went through JSON
        if lookup.status is CacheStatus.SHARED:
            ctx.fallbacks.extend(AppliedFallback(stage, Category(category), detail)
                                 for stage, category, detail in applied)
        return value, HEADER[lookup.status]

