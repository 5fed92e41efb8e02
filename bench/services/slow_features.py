"""A feature stage that costs ~2 ms (a remote look-up stand-in), with and without a stage cache.

``plain`` looks the features up on every request; ``cached`` caches them per user
(``Cache(key=lambda r: r.user)``), a narrow key: requests that differ in everything but the
user still share the entry. Neither has a response cache, so the model runs every time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

import buttress as bt

LOOKUP_SECONDS = 0.002


class Scoring(bt.Input):
    user: int
    x: float


EXAMPLE = {"user": 1, "x": 0.5}


def weighted_sum(rows: np.ndarray) -> np.ndarray:
    return np.asarray(rows @ np.array([0.3, 0.7]))


def slow_features_service(name: str, cache: bt.Cache | None) -> bt.Service:
    svc = bt.Service(name, input=Scoring, example=EXAMPLE)

    @svc.stage(timeout="50ms", fallback={"f": 0.0}, category=bt.Category.FEATURES_UNAVAILABLE,
               cache=cache)
    async def features(request: Scoring) -> dict[str, float]:
        await asyncio.sleep(LOOKUP_SECONDS)
        return {"f": float(request.user % 97)}

    @svc.model(model=weighted_sum, version="v1", timeout="100ms", fallback=0.0)
    def score(request: Scoring, features: dict[str, float]) -> np.ndarray:
        return np.array([[request.x, features["f"]]])

    @svc.respond
    def respond(request: Scoring, score: np.ndarray) -> dict[str, Any]:
        return {"user": request.user, "score": round(float(np.asarray(score).ravel()[0]), 4)}

    return svc


plain = slow_features_service("features-plain", cache=None)
cached = slow_features_service(
    "features-cached", cache=bt.Cache(ttl="10m", key=lambda request: request.user))
