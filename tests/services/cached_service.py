"""A service with a response cache and a stage cache, and counters that tell what really ran.

:func:`cached_service` declares a fresh service (its own counters, its own name) so every
in-process test gets one of its own; the module-level ``svc`` is what the server tests serve,
named by ``CACHED_SERVICE_NAME`` so each test run owns its Redis namespace.

The request picks what happens: ``mode="raise"`` makes the model raise (a ``model_error``
fallback), a negative ``user`` makes the ``features`` stage raise (a
``features_unavailable`` fallback). Every answer carries the counts of model and feature
calls *at the time it was computed*, so a cached answer shows old counts and a fresh one new.
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import buttress as bt

MODEL_FALLBACK = -1.0
FEATURES_FALLBACK = {"f": 0.0}


class Meta(bt.Input):
    a: float = 0.0
    b: str = ""


class Item(bt.Input):
    x: float
    user: int = 0
    mode: str = "ok"
    meta: Meta = bt.field(default_factory=Meta)


@dataclass
class Calls:
    """How often the model and the ``features`` stage ran; the model runs in worker threads."""

    model: int = 0
    features: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_model(self) -> int:
        with self.lock:
            self.model += 1
            return self.model


class CountingModel:
    """``predict`` sums each row's features; a row whose last column is 1 raises."""

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def predict(self, rows: np.ndarray) -> np.ndarray:
        self.calls.count_model()
        if rows[:, -1].any():
            raise RuntimeError("injected model failure (mode=raise)")
        return np.asarray(rows[:, :-1].sum(axis=1))


@dataclass
class CachedService:
    svc: bt.Service
    calls: Calls


def cached_service(
    name: str,
    *,
    version: str = "v1",
    ttl: str = "60s",
    feature_sleep: float = 0.0,
    model_breaker: bt.Breaker | None = None,
) -> CachedService:
    """A response cache of ``ttl``, and a ``features`` stage cached per ``user``."""
    calls = Calls()
    svc = bt.Service(name, input=Item, cache=bt.Cache(ttl=ttl))

    @svc.stage(fallback=FEATURES_FALLBACK, category=bt.Category.FEATURES_UNAVAILABLE,
               cache=bt.Cache(ttl=ttl, key=lambda item: item.user))
    async def features(item: Item) -> dict[str, Any]:
        calls.features += 1
        if feature_sleep:
            await asyncio.sleep(feature_sleep)
        if item.user < 0:
            raise RuntimeError("injected features failure (negative user)")
        return {"f": 2.0 * item.user}

    @svc.model(model=CountingModel(calls), version=version, fallback=MODEL_FALLBACK,
               breaker=model_breaker or bt.Breaker(consecutive_failures=3, open_for="60s"))
    def score(item: Item, features: dict[str, Any]) -> np.ndarray:
        return np.array([[item.x, features["f"], item.mode == "raise"]], dtype=np.float64)

    @svc.respond
    def respond(item: Item, score: np.ndarray) -> dict[str, Any]:
        return {"x": item.x, "score": float(np.asarray(score).ravel()[0]),
                "model_calls": calls.model, "feature_calls": calls.features}

    return CachedService(svc, calls)


served = cached_service(os.environ.get("CACHED_SERVICE_NAME", "cached"))
svc = served.svc
