"""The bench's memory-bound model: a 4-layer 2048x2048 float32 MLP with seeded weights.

Its weights (64 MiB) exceed the 32 MiB L3 of the machines PERFORMANCE.md was measured on, so
one row streams every weight from memory, and a batch of 64 reuses each weight it loads:
batching amortizes the memory traffic. The request stays small: a row of ``WIDTH`` floats is
derived deterministically from ``INPUT_SIZE`` floats the client sends.

Shared by the buttress service (``bench/services/mlp.py``) and the raw baselines
(``bench/raw_apps.py``), so both serve exactly the same computation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

WIDTH = 2048
LAYERS = 4
INPUT_SIZE = 64
SEED = 0


class MLP:
    """``x @ W + b`` then ReLU, ``LAYERS`` times, then a linear head: one score per row."""

    def __init__(self, width: int = WIDTH, layers: int = LAYERS, seed: int = SEED) -> None:
        rng = np.random.default_rng(seed)
        scale = np.float32(np.sqrt(2.0 / width))  # He initialisation: activations stay O(1)
        self.weights = [rng.standard_normal((width, width), dtype=np.float32) * scale
                        for _ in range(layers)]
        self.biases = [rng.standard_normal(width, dtype=np.float32) * np.float32(0.01)
                       for _ in range(layers)]
        self.head = rng.standard_normal(width, dtype=np.float32) / np.float32(np.sqrt(width))

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for w in self.weights)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        x = np.asarray(rows, dtype=np.float32)
        for w, b in zip(self.weights, self.biases, strict=True):
            x = np.maximum(x @ w + b, np.float32(0.0))
        scores: np.ndarray = x @ self.head
        return scores


def row_from(values: Sequence[float]) -> np.ndarray:
    """One (1, WIDTH) float32 row: the client's ``INPUT_SIZE`` floats tiled to ``WIDTH``."""
    return np.resize(np.asarray(values, dtype=np.float32), (1, WIDTH))


EXAMPLE_X = [round(0.01 * i - 0.3, 2) for i in range(INPUT_SIZE)]
EXAMPLE: dict[str, object] = {"id": "r-1", "x": EXAMPLE_X}
