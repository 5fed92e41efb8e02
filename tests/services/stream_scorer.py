"""A small batched service for the stream tests: ``score = 2 * x``.

``x`` is required (a message without it fails the input contract: a dead letter);
``sleep_ms`` makes the model sleep in its thread, so a test can kill a consumer while a batch
is in the model.
"""

from __future__ import annotations

import time

import numpy as np

import buttress as bt


class Item(bt.Input):
    id: str
    x: float
    sleep_ms: float = 0.0


class Scored(bt.Output):
    id: str
    score: float


svc = bt.Service("stream-scorer", input=Item, output=Scored, example={"id": "warm-up", "x": 1})


def double(rows: np.ndarray) -> np.ndarray:
    time.sleep(float(rows[:, 1].max()) / 1000)
    return np.asarray(rows[:, 0] * 2.0)


@svc.model(model=double, version="v1", timeout="2s", fallback=-1.0, breaker=None,
           batch=bt.Batch(max_size=64, max_wait="5ms"))
def score(item: Item) -> np.ndarray:
    return np.array([[item.x, item.sleep_ms]], dtype=np.float64)


@svc.respond
def respond(item: Item, score: np.ndarray) -> Scored:
    return Scored(id=item.id, score=float(np.asarray(score).ravel()[0]))
