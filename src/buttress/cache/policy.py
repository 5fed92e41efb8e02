"""``bt.Cache``: how one response or one stage is cached, declared once and validated then.

The declaration holds no state; :class:`buttress.cache.ResultCache` is the running cache built
from it for one owner (the service's response, or one stage).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from buttress.backends import parse_backend_url
from buttress.resilience.breaker import Breaker
from buttress.resilience.durations import Duration, seconds

DEFAULT_LOCK = "1s"


@dataclass(frozen=True)
class Cache:
    """Cache answers for ``ttl``.

    - ``max_entries`` bounds the in-process (``memory://``) backend, which evicts the least
      recently used entry; on Redis the server's own ``maxmemory-policy`` decides.
    - ``key(validated_input) -> object`` narrows the key (e.g. ``lambda o: o.user.id``); without
      it the whole validated input is the key.
    - ``url`` is ``memory://`` (per process) or ``redis://host:port/db`` (shared by replicas);
      ``None`` takes the service's default.
    - ``lock`` (Redis only): on a miss one replica computes while the others wait up to the lock
      time for its answer, instead of all computing at once. ``True`` means 1 s, or give a
      duration. Within one process concurrent misses are always computed once.
    """

    ttl: Duration = "60s"
    max_entries: int = 10_000
    key: Callable[[Any], object] | None = None
    url: str | None = None
    lock: bool | Duration = False
    breaker: Breaker | None = None
    """Guards a Redis backend (default ``Breaker.for_backend()``: 5 failures in a row, open
    5 s)."""

    def __post_init__(self) -> None:
        if seconds(self.ttl, name="Cache.ttl") <= 0:
            raise ValueError("Cache.ttl must be positive")
        if isinstance(self.max_entries, bool) or not isinstance(self.max_entries, int):
            raise TypeError("Cache.max_entries must be an int")
        if self.max_entries < 1:
            raise ValueError("Cache.max_entries must be at least 1")
        if self.key is not None and not callable(self.key):
            raise TypeError("Cache.key must be a callable (validated_input) -> object")
        if self.url is not None:
            check_url(self.url)
        if not isinstance(self.lock, bool) and seconds(self.lock, name="Cache.lock") <= 0:
            raise ValueError("Cache.lock must be True, False or a positive duration")

    @property
    def ttl_seconds(self) -> float:
        return seconds(self.ttl)

    @property
    def lock_seconds(self) -> float | None:
        """How long one replica may hold the compute lock; ``None`` when there is no lock."""
        if self.lock is False:
            return None
        return seconds(DEFAULT_LOCK if self.lock is True else self.lock)


def check_url(url: str) -> str:
    """``url`` if a cache can live there (``memory://`` or ``redis://``), else ``ValueError``."""
    parsed = parse_backend_url(url)
    if not (parsed.is_memory or parsed.is_redis):
        raise ValueError(f"a cache lives in memory:// or redis://, not {parsed.redacted()}")
    return url
