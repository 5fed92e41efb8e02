"""Synchronous models on a small dedicated thread pool, never on the event loop.

scikit-learn, LightGBM, NumPy code, ONNX Runtime and PyTorch on the CPU are CPU-bound and
release the GIL in their native code, so a model thread computes while the event loop serves
other requests. One executor hop per call: with a ``bt.Batch`` that is one hop per batch.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from buttress.runners.types import Predictor, Signature

ThreadSetup = Callable[[int], None]
"""Run once in each model thread with the native thread cap (e.g. ``torch.set_num_threads``)."""


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


def _prepare_thread(native_threads: int, setup: ThreadSetup | None) -> None:
    limit_native_threads(native_threads)
    if setup is not None:
        setup(native_threads)


class ThreadRunner:
    """Runs a synchronous model (a ``predict`` method or a plain function) off the event loop."""

    def __init__(self, model: Predictor | Callable[[np.ndarray], Any], threads: int = 1,
                 native_threads: int = 1, *, setup: ThreadSetup | None = None) -> None:
        self.model = model
        self._predict: Callable[[np.ndarray], Any] = (
            model.predict if isinstance(model, Predictor) else model
        )
        self.threads = threads
        self.native_threads = native_threads
        self._executor = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="model",
            initializer=_prepare_thread, initargs=(native_threads, setup))
        self._start_threads()

    def _start_threads(self) -> None:
        """Start every model thread now rather than on first use.

        ThreadPoolExecutor starts a thread only when no idle one is free, and each new thread
        runs ``_prepare_thread`` (threadpoolctl inspects the loaded native libraries: a few
        milliseconds). With batching, warm-up requests share one batch, so the second thread
        used to start inside a served request. Each start-up job waits until all threads hold
        one, so none can be reused before every thread exists.
        """
        everyone = threading.Barrier(self.threads)
        started = [self._executor.submit(everyone.wait, 30.0) for _ in range(self.threads)]
        for job in started:
            job.result()

    def predict_now(self, rows: np.ndarray) -> np.ndarray:
        """Synchronous call on the caller's thread (warm-up, tests)."""
        return np.asarray(self._predict(rows))

    def run(self, rows: np.ndarray) -> asyncio.Future[np.ndarray]:
        """The executor's Future itself: awaited as it is, it costs no Task, and the call is
        submitted now rather than on the loop's next iteration."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, self.predict_now, rows)

    def signature(self) -> Signature:
        """The row width scikit-learn (``n_features_in_``) or LightGBM records, if any."""
        model = self.model
        features = getattr(model, "n_features_in_", None)
        num_feature = getattr(model, "num_feature", None)  # a LightGBM Booster
        if features is None and callable(num_feature):
            features = num_feature()
        return Signature(features=int(features) if features is not None else None)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({type(self.model).__name__}, threads={self.threads}, "
                f"native_threads={self.native_threads})")
