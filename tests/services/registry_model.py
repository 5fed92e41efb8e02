"""A service whose model comes from the registry, for the hot-swap and rollback tests.

Its artifacts are tiny skops linear models made on the spot: version k answers ``scale x
sum(x)``, so every answer says which version computed it (``score / sum(x)``).
``svc`` is what ``buttress serve tests/services/registry_model.py:svc`` serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import buttress as bt

FEATURES = 3
EXAMPLE = {"x": [0.1, 0.2, 0.3]}
FALLBACK_SCORE = -1.0


class Row(bt.Input):
    x: list[float] = bt.field(min_length=FEATURES, max_length=FEATURES)


class Score(bt.Output):
    score: float


def scale_of(request: Any, response: Any) -> float:
    """What the version multiplies the row sum by: the rollback rules' measure."""
    return float(response.score / max(sum(request.x), 1e-9))


def make_service(name: str = "registry-model", *, cache: bool = False,
                 rules: Sequence[bt.RollbackRule] = (), model: str = "scorer",
                 alias: str = "stable") -> bt.Service:
    svc = bt.Service(name, input=Row, output=Score, example=EXAMPLE,
                     cache=bt.Cache(ttl="10min") if cache else None)

    @svc.model(model=bt.FromRegistry(model, alias=alias), timeout="500ms",
               fallback=[FALLBACK_SCORE],
               batch=bt.Batch(max_size=32, max_wait="1ms"), rollback=rules)
    def scorer(row: Row) -> np.ndarray:
        return np.array([row.x], dtype=np.float64)

    @svc.respond
    def respond(row: Row, scorer: np.ndarray) -> Score:
        return Score(score=round(float(np.asarray(scorer).ravel()[0]), 6))

    return svc


svc = make_service()


def linear_file(folder: Path, scale: float, *, features: int = FEATURES,
                name: str | None = None) -> Path:
    """A skops LinearRegression answering ``scale x sum(row)`` on rows of ``features``."""
    import skops.io
    from sklearn.linear_model import LinearRegression

    rows = np.random.default_rng(3).random((100, features))
    path = folder / (name or f"linear-{scale:g}-{features}.skops")
    skops.io.dump(LinearRegression().fit(rows, scale * rows.sum(axis=1)), path)
    return path


def broken_file(folder: Path) -> Path:
    """Registers as a LightGBM text model; does not parse."""
    path = folder / "broken.txt"
    path.write_text("tree\nthis is not a model\n")
    return path
