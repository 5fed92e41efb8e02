"""A small guarded service: the request names its user and the value it wants granted.

The model grants exactly the requested ``value`` (so a test chooses each request's cost); the
default prediction is :data:`DEFAULT_GRANT` (0), which is what a refused request gets.
``mode="raise"`` makes the model raise, so that request is answered by the model's fallback
(``model_error``) before any guardrail is asked.

:func:`guarded_service` declares a fresh service (its own name = its Redis namespace, its own
model-call counter) for in-process tests; the module-level ``svc`` is what the server tests
serve, configured by environment variables so each test owns its namespace and limits:
``GUARDED_SERVICE_NAME``, ``GUARDED_COUNT_LIMIT`` (requests per user, fixed window),
``GUARDED_VALUE_LIMIT`` (granted value over all users, sliding window), ``GUARDED_FAIL``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

import buttress as bt
from buttress.guardrails import Guardrail
from buttress.guardrails.policy import FailPolicy

DEFAULT_GRANT = 0.0
COUNT_GUARDRAIL = "claims_per_user"
VALUE_GUARDRAIL = "granted_value"
# Fixed windows are aligned to the epoch: a day-long one makes a test that happens to cross
# an edge (and so sees its counts restart) a 1-in-tens-of-thousands event.
COUNT_WINDOW = "24h"
VALUE_WINDOW = "1h"


class Claim(bt.Input):
    user: str
    value: float = 1.0
    mode: str = "ok"


class Grant(bt.Output):
    user: str
    granted: float


def granted(claim: Claim, grant: Grant) -> float:
    return grant.granted


def user_of(claim: Claim) -> str:
    return claim.user


def per_user_count(limit: float, fail: FailPolicy = "closed") -> bt.FixedWindow:
    return bt.FixedWindow(COUNT_GUARDRAIL, limit=limit, window=COUNT_WINDOW, key=user_of,
                          fail=fail)


def value_sum(limit: float, fail: FailPolicy = "closed") -> bt.SlidingWindow:
    return bt.SlidingWindow(VALUE_GUARDRAIL, limit=limit, window=VALUE_WINDOW, measure=granted,
                            fail=fail)


@dataclass
class Calls:
    """How many rows the model predicted (it runs in worker threads)."""

    rows: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass
class GuardedService:
    svc: bt.Service
    calls: Calls


def guarded_service(
    name: str,
    guardrails: Sequence[Guardrail],
    *,
    cache: bt.Cache | None = None,
    batch: bt.Batch | None = None,
) -> GuardedService:
    calls = Calls()
    svc = bt.Service(name, input=Claim, output=Grant, cache=cache, guardrails=guardrails,
                     example={"user": "warm-up", "value": 1.0})

    def grant_requested(rows: np.ndarray) -> np.ndarray:
        with calls.lock:
            calls.rows += len(rows)
        if rows[:, 1].any():
            raise RuntimeError("injected model failure (mode=raise)")
        return np.asarray(rows[:, 0])

    @svc.model(model=grant_requested, fallback=DEFAULT_GRANT, batch=batch,
               breaker=None)  # injected failures must not open it
    def grant(claim: Claim) -> np.ndarray:
        return np.array([[claim.value, claim.mode == "raise"]], dtype=np.float64)

    @svc.respond
    def respond(claim: Claim, grant: np.ndarray) -> Grant:
        return Grant(user=claim.user, granted=float(np.asarray(grant).ravel()[0]))

    return GuardedService(svc, calls)


def _guardrails_from_environment() -> list[Guardrail]:
    fail: FailPolicy = "open" if os.environ.get("GUARDED_FAIL") == "open" else "closed"
    return [per_user_count(float(os.environ.get("GUARDED_COUNT_LIMIT", "3")), fail),
            value_sum(float(os.environ.get("GUARDED_VALUE_LIMIT", "100")), fail)]


served = guarded_service(os.environ.get("GUARDED_SERVICE_NAME", "guarded"),
                         _guardrails_from_environment())
svc = served.svc
