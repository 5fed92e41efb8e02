"""Model runners: the one seam between buttress and a model.

A runner turns a 2-D batch of feature rows into predictions, one per row. Synchronous models
(scikit-learn, NumPy code, ONNX Runtime, PyTorch on the CPU) are CPU-bound, so their calls run
on a small dedicated thread pool, never on the event loop; their native code releases the GIL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Predictor(Protocol):
    """Anything with scikit-learn's ``predict``."""

    def predict(self, rows: Any, /) -> Any: ...


class Runner(Protocol):
    """What the model stage calls: rows in, one prediction per row out."""

    async def run(self, rows: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def limit_native_threads(threads: int) -> None:
    """Cap the OpenMP/BLAS pools (scikit-learn, NumPy, LightGBM) used from the calling thread.

    OpenMP's thread count is per calling thread, so each model thread sets it for itself.
    Measured on the demo at 150 req/s: with the default (one OpenMP thread per core in each
    model thread) the two cores were oversubscribed, the event loop stalled for hundreds of
    milliseconds and timeouts opened the model's breaker. Batching, not intra-op parallelism,
    is what makes a served model fast.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # nothing native to cap
        return
    threadpool_limits(limits=threads)


class ThreadRunner:
    """Runs a synchronous model (a ``predict`` method or a plain function) off the event loop."""

    def __init__(self, model: Predictor | Callable[[np.ndarray], Any], threads: int = 1,
                 native_threads: int = 1) -> None:
        self._predict: Callable[[np.ndarray], Any] = (
            model.predict if isinstance(model, Predictor) else model
        )
        self._executor = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="model",
            initializer=limit_native_threads, initargs=(native_threads,))

    def predict_now(self, rows: np.ndarray) -> np.ndarray:
        """Synchronous call on the caller's thread (warm-up, tests)."""
        return np.asarray(self._predict(rows))

    async def run(self, rows: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.predict_now, rows)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def as_runner(model: Any, threads: int = 1, native_threads: int = 1) -> Runner:
    """Wrap what a user declared as the model into a :class:`Runner`."""
    if hasattr(model, "run") and asyncio.iscoroutinefunction(model.run):
        return model  # type: ignore[no-any-return]
    if isinstance(model, Predictor) or callable(model):
        return ThreadRunner(model, threads, native_threads)
    raise TypeError(
        f"cannot run {model!r}: give an object with .predict(rows), a function of rows, "
        "or a Runner with an async .run(rows)"
    )
