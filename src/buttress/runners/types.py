"""The contracts of the model seam, named once.

A :class:`Runner` is what the model stage calls. What a user declares as the model is turned
into one by :func:`~buttress.runners.as_runner`; a :class:`ModelDeclaration` (such as
:class:`~buttress.runners.RemoteModel`) is a recipe that builds a fresh runner for each built
service, so two runtimes never share a connection pool or a breaker.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Predictor(Protocol):
    """Anything with scikit-learn's ``predict``."""

    def predict(self, rows: Any, /) -> Any: ...


class Runner(Protocol):
    """What the model stage calls: rows in, one prediction per row out.

    ``run`` may be a coroutine function or return a Future (what an executor hands back):
    the batcher awaits a Future as it is, without a Task per batch."""

    def run(self, rows: np.ndarray) -> Awaitable[np.ndarray]: ...

    def close(self) -> None: ...


@runtime_checkable
class ModelDeclaration(Protocol):
    """A model declared by its settings; each built service gets its own runner from it."""

    def build_runner(self, threads: int, native_threads: int) -> Runner: ...


@dataclass(frozen=True)
class Signature:
    """What a model takes and gives, as far as it is known (for the OIP metadata endpoint).

    ``features`` is the width of a row (``None`` when unknown); ``output_shape`` is the shape
    of the predictions with ``-1`` for the rows: ``(-1,)`` for one value per row.
    Dtypes are NumPy dtype names (``"float32"``).
    """

    features: int | None = None
    input_dtype: str = "float64"
    output_dtype: str = "float64"
    output_shape: tuple[int, ...] = (-1,)


@runtime_checkable
class Described(Protocol):
    """A runner that can say what its model takes and gives."""

    def signature(self) -> Signature: ...


def one_per_row(predictions: np.ndarray) -> np.ndarray:
    """Drop a trailing axis of length 1: ``(n, 1)`` becomes ``(n,)``.

    ONNX exports of regressors, PyTorch heads and OIP servers give ``(n, 1)`` where
    scikit-learn gives ``(n,)``; one shape means swapping the runner changes nothing else.
    """
    if predictions.ndim == 2 and predictions.shape[1] == 1:
        return predictions[:, 0]
    return predictions
