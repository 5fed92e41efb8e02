"""The model versions a request uses, held so that a hot swap never mixes two of them.

A :class:`LiveModel` is one version of one model stage as it runs: its runner, its batcher
and its breaker. A :class:`ModelSet` is the versions of every model stage that serve
together. The pipeline holds one ``ModelSet``; a request reads it once, when it starts, and
uses that one snapshot for its cache key, its model calls and its ``X-Model-Version``. A hot
swap builds a new ``ModelSet`` and replaces the pipeline's in one assignment, so reading the
current versions is an attribute read (no lock, no await), and a request that started before
the swap finishes on the versions it started with.

Each version has its own batcher (a batch never mixes versions) and its own breaker (a
version's failures say nothing about the next one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from buttress.batching import BatchObserver

if TYPE_CHECKING:
    from buttress.batching import Batcher
    from buttress.observability.metrics import ServiceMetrics
    from buttress.pipeline.stage import StageRuntime
    from buttress.pipeline.tally import Tally
    from buttress.resilience.breaker import CircuitBreaker
    from buttress.runners import Runner


class LiveModel:
    """One version of a model stage, running."""

    __slots__ = ("batcher", "breaker", "closed", "runner", "version")

    def __init__(self, version: str, runner: Runner, breaker: CircuitBreaker | None) -> None:
        self.version = version
        self.runner = runner
        self.batcher: Batcher | None = None
        self.breaker = breaker
        self.closed = False

    async def aclose(self) -> None:
        """Finish what the batcher holds, then stop the model threads."""
        self.closed = True
        if self.batcher is not None:
            await self.batcher.aclose()
        close: Any = getattr(self.runner, "aclose", None)
        if close is not None:
            await close()
        else:
            self.runner.close()

    def __repr__(self) -> str:
        return f"<LiveModel {self.version}>"


class VersionObserver(BatchObserver):
    """A batched model version's per-batch hooks: its Prometheus metrics, and its breaker fed
    one outcome per batch (through the stage's own accounting)."""

    def __init__(self, metrics: ServiceMetrics, stage: StageRuntime, live: LiveModel) -> None:
        service, model = metrics.service, stage.spec.name
        self._stage = stage
        self._live = live
        self._rows = metrics.batch_rows.labels(service, model)
        self._wait = metrics.batch_wait.labels(service, model)
        self._queue = metrics.batch_queue.labels(service, model)
        self._metrics, self._model = metrics, model

    def batch_formed(self, rows: int, items: int, oldest_wait: float, queued_rows: int) -> None:
        self._rows.observe(rows)
        self._wait.observe(oldest_wait)
        self._queue.set(queued_rows)

    def batch_ran(self, rows: int, items: int, seconds: float, error: BaseException | None) -> None:
        self._metrics.observe_model(self._model, self._live.version, seconds)

    def batch_outcome(self, seconds: float, error: BaseException | None) -> None:
        self._stage.account_batch(self._live.breaker, seconds, error)

    def rejected(self, rows: int, queued_rows: int) -> None:
        self._queue.set(queued_rows)


class ModelSet:
    """The versions of every model stage that serve together; replaced whole, never edited
    (but for :attr:`tally`, which a swap starts afresh)."""

    __slots__ = ("live", "tally", "version")

    def __init__(self, live: dict[str, LiveModel], tally: Tally | None = None) -> None:
        self.live = live
        """Stage name -> its running version."""
        self.version = ",".join(model.version for model in live.values())
        """What the cache keys and ``X-Model-Version`` carry: ``v3``, or ``v3,v1`` with two
        model stages (in declaration order)."""
        self.tally = tally
        """This set's running aggregates for the rollback rules (None: the service has none)."""

    def replaced(self, stage: str, model: LiveModel) -> ModelSet:
        """A new set with ``stage`` serving ``model``; this one is left as it is."""
        return ModelSet({**self.live, stage: model}, self.tally)

    def __repr__(self) -> str:
        return f"<ModelSet {self.version or '-'}>"
