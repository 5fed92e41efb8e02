"""Response and stage caches: answer repeated inputs in microseconds instead of recomputing.

``bt.Cache(...)`` declares a cache; :class:`ResultCache` runs it for one owner (the service's
response, or one stage). Backends by URL: ``memory://`` (bounded LRU + TTL, per process) and
``redis://`` (shared by replicas, invalidated by a generation counter). A failing backend is a
miss, never an error; fallback answers are never stored (``cacheable=False``).
"""

from __future__ import annotations

from buttress.cache.keys import KeyHasher, cache_key, canonical_json
from buttress.cache.outcomes import (
    MISS,
    CacheObserver,
    CacheStats,
    CacheStatus,
    CacheUnavailable,
    Lookup,
    Missing,
)
from buttress.cache.policy import Cache
from buttress.cache.response import Compute, ComputeMany, ResultCache

__all__ = [
    "MISS",
    "Cache",
    "CacheObserver",
    "CacheStats",
    "CacheStatus",
    "CacheUnavailable",
    "Compute",
    "ComputeMany",
    "KeyHasher",
    "Lookup",
    "Missing",
    "ResultCache",
    "cache_key",
    "canonical_json",
]
