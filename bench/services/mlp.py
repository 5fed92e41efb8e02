"""The MLP of ``network.py`` served by buttress: ``svc`` batches, ``svc_unbatched`` does not.

    buttress serve bench/services/mlp.py:svc            # bt.Batch(max_size=64, max_wait="2ms")
    buttress serve bench/services/mlp.py:svc_unbatched

One call costs milliseconds (tens at 64 rows), so the model stage gets a 2 s timeout: the
bench measures throughput, and a queue of 64 unbatched requests must not turn into fallbacks
(run the server with ``BUTTRESS_DEADLINE=2`` too, as ``bench/batching.py`` does).
"""

from __future__ import annotations

import numpy as np

import buttress as bt
from bench.services.network import EXAMPLE, INPUT_SIZE, MLP, row_from

MODEL = MLP()
BATCH = bt.Batch(max_size=64, max_wait="2ms")
TIMEOUT = "2s"


class Features(bt.Input):
    id: str
    x: list[float] = bt.field(min_length=INPUT_SIZE, max_length=INPUT_SIZE)


class Score(bt.Output):
    id: str
    score: float


def rows(features: Features) -> np.ndarray:
    return row_from(features.x)


def respond(features: Features, mlp: np.ndarray) -> Score:
    return Score(id=features.id, score=round(float(mlp[0]), 6))


def build(name: str, batch: bt.Batch | None) -> bt.Service:
    service = bt.Service(name, input=Features, output=Score, example=EXAMPLE,
                         description="A 4-layer 2048x2048 MLP (bench).")
    service.model(model=MODEL, version="v1", name="mlp", timeout=TIMEOUT,
                  fallback=lambda features: np.zeros(1), batch=batch)(rows)
    service.respond(respond)
    return service


svc = build("bench-mlp", BATCH)
svc_unbatched = build("bench-mlp", None)
