"""The guardrails a service owns: requests in, one decision each, one backend call per batch.

For each ``(request, prediction)`` the evaluator asks every guardrail for its key and cost
(``key`` None, or a cost of 0, means that guardrail does not apply), then hands the whole batch
to the store (``memory://`` or ``redis://``) in one call. The store admits requests in order
and all-or-nothing: a request is admitted only if its cost fits every guardrail that applies,
and a refused request consumes nothing.

When the store cannot be reached each applicable guardrail's ``fail`` policy decides: "closed"
refuses, "open" admits; both report ``unavailable`` (category ``guardrail_unavailable``). A
circuit breaker stops calling a Redis that keeps failing, so an outage costs each batch at most
the connection timeout until the breaker opens, and nothing after.

A call that is cancelled while Redis runs the script may still have spent its budget; the
error is on the safe side (less handed out, never more).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from buttress.backends import parse_backend_url
from buttress.guardrails.decision import (
    ADMITTED,
    Check,
    Decision,
    GuardrailSnapshot,
    Store,
    Usage,
)
from buttress.guardrails.memory import MemoryStore
from buttress.guardrails.policy import UNITS, Guardrail, to_units
from buttress.resilience.breaker import Breaker, CircuitBreaker

if TYPE_CHECKING:
    from buttress.backends import Connections

MAX_GUARDRAILS = 48
"""Refusals travel as bit masks through Lua doubles, exact up to 2**53."""


class Guardrails:
    """The guardrails of one service on one backend.

    ``clock`` is for tests: with ``memory://`` it defaults to ``time.time``; with ``redis://``
    ``None`` means the Redis server's clock (what production must use).
    """

    def __init__(
        self,
        guards: Sequence[Guardrail],
        url: str = "memory://",
        namespace: str = "default",
        *,
        breaker: Breaker | None = Breaker.for_backend(),  # noqa: B008 - immutable
        clock: Callable[[], float] | None = None,
    ) -> None:
        names = [g.name for g in guards]
        if len(set(names)) != len(names):
            raise ValueError(f"guardrail names must be unique, got {names}")
        if len(guards) > MAX_GUARDRAILS:
            raise ValueError(f"at most {MAX_GUARDRAILS} guardrails per service")
        for guard in guards:
            if not isinstance(guard, Guardrail) or type(guard) is Guardrail:
                raise TypeError(f"expected FixedWindow or SlidingWindow, got {guard!r}")
        self.guards: tuple[Guardrail, ...] = tuple(guards)
        self.url = parse_backend_url(url)
        if not (self.url.is_memory or self.url.is_redis):
            raise ValueError(f"guardrails need memory:// or redis://, got {self.url.redacted()}")
        self.namespace = namespace
        self._clock = clock
        self.breaker: CircuitBreaker | None = None
        """Guards the Redis backend (None with memory://); set ``on_change`` to watch it."""
        if self.url.is_redis and breaker is not None:
            self.breaker = breaker.build()
        self._store: Store | None = None
        self._memory: MemoryStore | None = None
        self._plan = [(i, g.key, g.measure) for i, g in enumerate(self.guards)]
        self._closed_mask = sum(1 << i for i, g in enumerate(self.guards) if g.fail == "closed")
        self._refusals: dict[int, Decision] = {0: ADMITTED}
        self._outages: dict[int, Decision] = {0: ADMITTED}
        self._backend_errors: tuple[type[Exception], ...] = (OSError,)

    async def open(self, connections: Connections | None = None) -> None:
        """Bind to the backend; ``connections`` (the service's) is needed for ``redis://``."""
        if self.url.is_memory:
            self._memory = MemoryStore(self.guards, self._clock or time.time)
            self._store = self._memory
            return
        if connections is None:
            raise ValueError(f"{self.url.redacted()} needs the service's Connections")
        from redis.exceptions import RedisError

        from buttress.guardrails.redis import RedisStore

        self._backend_errors = (RedisError, OSError)  # OSError includes TimeoutError
        store = RedisStore(self.guards, connections.redis(self.url), self.namespace, self._clock)
        await store.prepare()
        self._store = store

    async def admit(self, request: Any, prediction: Any) -> Decision:
        return (await self.admit_many(((request, prediction),)))[0]

    async def admit_many(self, items: Sequence[tuple[Any, Any]]) -> list[Decision]:
        """One decision per ``(request, prediction)``, in order, from one backend call."""
        store = self._store
        if store is None:
            raise RuntimeError("Guardrails.open() was not awaited")
        checks, errors = self._checks(items)
        if not any(checks):
            return [errors.get(n, ADMITTED) for n in range(len(items))]
        if self._memory is not None:
            masks = self._memory.admit_now(checks)
        else:
            remote = await self._admit_remote(store, checks)
            if remote is None:
                return [errors.get(n) or self._outage(c) for n, c in enumerate(checks)]
            masks = remote
        return [errors.get(n) or self._refusal(mask) for n, mask in enumerate(masks)]

    def _checks(
        self, items: Sequence[tuple[Any, Any]]
    ) -> tuple[list[list[Check]], dict[int, Decision]]:
        plan = self._plan
        out: list[list[Check]] = []
        errors: dict[int, Decision] = {}
        for n, (request, prediction) in enumerate(items):
            checks: list[Check] = []
            for index, key_of, measure in plan:
                try:
                    key = None
                    if key_of is not None:
                        key = key_of(request)
                        if key is None:
                            continue
                        if key.__class__ is not str:
                            key = str(key)
                    cost = UNITS if measure is None else to_units(measure(request, prediction))
                except Exception as exc:  # a bug in the user's measure or key: refuse this one
                    name = self.guards[index].name
                    errors[n] = Decision(False, (name,), error=f"guardrail {name}: {exc!r}")
                    checks = []
                    break
                if cost > 0:
                    checks.append((index, key, cost))
            out.append(checks)
        return out, errors

    async def _admit_remote(self, store: Store, checks: list[list[Check]]) -> list[int] | None:
        """The store's masks, or None when it is unreachable (or its breaker is open)."""
        breaker = self.breaker
        if breaker is not None and not breaker.allow():
            return None
        admitted_in = breaker.period if breaker is not None else 0
        try:
            masks = await store.admit(checks)
        except self._backend_errors:
            if breaker is not None:
                breaker.record_failure()
            return None
        except asyncio.CancelledError:
            if breaker is not None:
                breaker.release_probe(admitted_in)
            raise
        if breaker is not None:
            breaker.record_success()
        return masks

    def _refusal(self, mask: int) -> Decision:
        decision = self._refusals.get(mask)
        if decision is None:
            names = tuple(g.name for i, g in enumerate(self.guards) if mask >> i & 1)
            decision = self._refusals[mask] = Decision(False, names)
        return decision

    def _outage(self, checks: list[Check]) -> Decision:
        applicable = 0
        for index, _, _ in checks:
            applicable |= 1 << index
        decision = self._outages.get(applicable)
        if decision is None:
            refusing = applicable & self._closed_mask
            names = tuple(g.name for i, g in enumerate(self.guards) if refusing >> i & 1)
            decision = Decision(not refusing, names, unavailable=True)
            if applicable:
                self._outages[applicable] = decision
        return decision

    def _index(self, name: str) -> int:
        for index, guard in enumerate(self.guards):
            if guard.name == name:
                return index
        known = ", ".join(g.name for g in self.guards)
        raise KeyError(f"no guardrail named {name!r} (known: {known})")

    async def set_limit(self, name: str, limit: float | None) -> None:
        """Change guardrail ``name``'s limit now, for every replica sharing the backend;
        ``None`` restores the declared limit."""
        if self._store is None:
            raise RuntimeError("Guardrails.open() was not awaited")
        index = self._index(name)
        units = None
        if limit is not None:
            guard = self.guards[index]
            type(guard)(name, limit, guard.window)  # validates the new limit like a declaration
            units = to_units(limit, what="limit")
        await self._store.set_limit(index, name, units)

    async def snapshot(self, top: int = 10) -> list[GuardrailSnapshot]:
        """Limit, use and remaining budget now; for keyed guardrails the ``top`` busiest keys.

        With Redis this is a network call that may raise ``redis.exceptions.RedisError``."""
        if self._store is None:
            raise RuntimeError("Guardrails.open() was not awaited")
        stored = await self._store.usage(scan=max(top, 1000))
        report = []
        for guard, entry in zip(self.guards, stored, strict=True):
            used_by = entry.used[:1] if guard.key is None else [e for e in entry.used if e[1]][:top]
            usage = tuple(
                Usage(key, used / UNITS, max(0, entry.limit - used) / UNITS)
                for key, used in used_by
            )
            if guard.key is None and not usage:
                usage = (Usage(None, 0.0, entry.limit / UNITS),)
            report.append(
                GuardrailSnapshot(
                    guard.name,
                    guard.kind,
                    guard.window_seconds,
                    entry.limit / UNITS,
                    guard.key is not None,
                    usage,
                )
            )
        return report


def warn_if_per_process(url: str, workers: int) -> str | None:
    """A warning when ``memory://`` guardrails would be counted separately by each worker."""
    if workers > 1 and parse_backend_url(url).is_memory:
        return (
            f"guardrails on memory:// with {workers} workers: each worker process keeps its own "
            f"counts, so together they may admit up to {workers}x each limit. Use redis:// "
            "to share limits across workers and replicas."
        )
    return None
