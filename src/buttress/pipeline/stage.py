"""The running parts of one stage: its breaker, its cache and, for a model, its runner and
batcher. ``StageRuntime.predict`` is the one way rows reach a model, for ``/predict`` and for
the Open Inference Protocol routes alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import numpy as np

from buttress.batching import Batcher, BatchObserver
from buttress.resilience.breaker import BreakerState, CircuitBreaker
from buttress.runners import Runner, as_runner

if TYPE_CHECKING:
    from buttress.observability.metrics import ServiceMetrics
    from buttress.pipeline.cache_gate import CachedComputation
    from buttress.stages import StageSpec

TRACEBACK_INTERVAL = 10.0
"""Log a stage's full traceback at most this often; in between, one line per failure."""


class _BatchMetrics(BatchObserver):
    """The batcher's per-batch hooks bound to the service's Prometheus metrics."""

    def __init__(self, metrics: ServiceMetrics, stage: StageRuntime) -> None:
        service, model, version = metrics.service, stage.spec.name, stage.spec.version
        self._stage = stage
        self._rows = metrics.batch_rows.labels(service, model)
        self._wait = metrics.batch_wait.labels(service, model)
        self._queue = metrics.batch_queue.labels(service, model)
        self._metrics, self._model, self._version = metrics, model, version

    def batch_formed(self, rows: int, items: int, oldest_wait: float, queued_rows: int) -> None:
        self._rows.observe(rows)
        self._wait.observe(oldest_wait)
        self._queue.set(queued_rows)

    def batch_ran(self, rows: int, items: int, seconds: float, error: BaseException | None) -> None:
        self._metrics.observe_model(self._model, self._version, seconds)

    def batch_outcome(self, seconds: float, error: BaseException | None) -> None:
        """A batched model's breaker counts batches, not requests: one slow or failing batch
        is one failure, not up to ``max_size`` of them (which would open it at once)."""
        breaker = self._stage.breaker
        if breaker is None:
            return
        timeout = self._stage.spec.timeout
        if error is not None or (timeout is not None and seconds > timeout):
            breaker.record_failure()
        else:
            breaker.record_success()

    def rejected(self, rows: int, queued_rows: int) -> None:
        self._queue.set(queued_rows)


class StageRuntime:
    """The running parts of one stage: its breaker and, for a model, its runner."""

    @property
    def counts_per_batch(self) -> bool:
        """Its breaker is fed one outcome per batch by the batcher, not one per request."""
        return self.batcher is not None

    def __init__(self, spec: StageSpec, metrics: ServiceMetrics, threads: tuple[int, int],
                 cache: CachedComputation | None) -> None:
        self.spec = spec
        self.cache = cache
        self.breaker: CircuitBreaker | None = spec.breaker.build() if spec.breaker else None
        self.watch_breaker(metrics)
        self.runner: Runner | None = (
            as_runner(spec.model, *threads) if spec.kind == "model" else None)
        self.version = spec.version
        self.batcher: Batcher | None = None
        if self.runner is not None and spec.batch is not None:
            self.batcher = Batcher(spec.batch, self.runner.run,
                                   observer=_BatchMetrics(metrics, self))
        self.last_traceback = -TRACEBACK_INTERVAL
        self.plain = cache is None and self.runner is None
        """A stage function with no cache and no model: the pipeline starts it with a plain
        call; a cached or model stage runs as one coroutine."""

    def predict(self, rows: np.ndarray, deadline: float,
                metrics: ServiceMetrics) -> Awaitable[np.ndarray]:
        """Run the model on ``rows`` through the batcher (if any) or the runner, bounded by the
        stage timeout and ``deadline`` (loop time). Raises what the model or batcher raised;
        the caller owns the breaker and the fallback. Shared by /predict and /v2 inference.

        A plain function returning what to await: a batched call awaits the batcher's own
        ``submit`` directly, with no coroutine of ours around it on the hot path."""
        assert self.runner is not None
        spec = self.spec
        now = asyncio.get_running_loop().time()
        until = deadline if spec.timeout is None else min(deadline, now + spec.timeout)
        if self.batcher is not None:
            # The batcher holds no rows past their deadline (on time.monotonic's clock), queued
            # or running (one timer per batch): no timer per request here.
            return self.batcher.submit(rows, time.monotonic() + (until - now))
        return self._run_alone(rows, until, metrics)

    async def _run_alone(self, rows: np.ndarray, until: float,
                         metrics: ServiceMetrics) -> np.ndarray:
        assert self.runner is not None
        clock = time.perf_counter()
        async with asyncio.timeout_at(until):
            predictions = await self.runner.run(rows)
        metrics.observe_model(self.spec.name, self.version, time.perf_counter() - clock)
        return predictions

    def record_outcome(self, failed: bool, *, reached_batcher: bool) -> None:
        """Feed this stage's breaker one call's outcome (``/predict`` and ``/v2`` alike).

        A call that reached a batcher was already counted with its batch
        (``batch_outcome``): here it only frees the half-open probe slot it may hold, so one
        failing batch is one failure, not one per request in it."""
        breaker = self.breaker
        if breaker is None:
            return
        if reached_batcher and self.counts_per_batch:
            breaker.release_probe()
        elif failed:
            breaker.record_failure()
        else:
            breaker.record_success()

    def watch_breaker(self, metrics: ServiceMetrics) -> None:
        """Mirror the breaker's state into the ``buttress_breaker_open`` gauge."""
        if self.breaker is not None:
            name = self.spec.name
            self.breaker.on_change = lambda state: metrics.set_breaker_open(
                name, state is not BreakerState.CLOSED)
