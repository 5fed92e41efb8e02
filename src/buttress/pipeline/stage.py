"""One stage at run time, and the one place its rules live: breaker, timeout, deadline and
fallback, and what counts as a failure.

The engine (``/predict``), ``ServedModels`` (``/v2``) and any other transport run a stage only
through this module, so the rules cannot drift apart: a stage's call is bounded by
:func:`~buttress.resilience.deadline.call_until`; its failure's kind comes from
:func:`~buttress.resilience.failures.failure_of` and maps to the stage's category; only
:meth:`StageRuntime._account` feeds its breaker, counting what
:func:`~buttress.resilience.failures.counts_against_breaker` says is the dependency's fault.

Cost matters here: a plain stage starts as a function call stepped in the request's own task
and gets a timer only if it suspends (``buttress.pipeline.stepping`` says why that is safe);
a batched model call awaits the batcher's own future, with no coroutine of ours around it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import numpy as np

from buttress.batching import Batcher, BatchObserver
from buttress.pipeline.stepping import Finished, Resumed, first_step
from buttress.resilience.breaker import BreakerState, CircuitBreaker
from buttress.resilience.deadline import call_until, caller_gave_up
from buttress.resilience.durations import as_ms
from buttress.resilience.failures import Failure, counts_against_breaker, failure_of
from buttress.runners import Runner, as_runner

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from buttress.observability.exceptions import ExceptionEvents
    from buttress.observability.metrics import ServiceMetrics
    from buttress.pipeline.cache_gate import CachedComputation
    from buttress.pipeline.context import RequestContext
    from buttress.resilience.categories import Category
    from buttress.stages import StageSpec

log = logging.getLogger("buttress.pipeline")

class StageFailed(Exception):
    """A stage with no fallback failed: the request cannot be answered (503)."""

    def __init__(self, stage: str, category: Category, message: str,
                 failure: Failure = Failure.ERROR) -> None:
        super().__init__(message)
        self.stage = stage
        self.category = category
        self.failure = failure


class _BatchObserver(BatchObserver):
    """A batched model's per-batch hooks: its Prometheus metrics, and its breaker fed one
    outcome per batch (through the stage's own accounting)."""

    def __init__(self, metrics: ServiceMetrics, stage: StageRuntime) -> None:
        service, model = metrics.service, stage.spec.name
        self._stage = stage
        self._rows = metrics.batch_rows.labels(service, model)
        self._wait = metrics.batch_wait.labels(service, model)
        self._queue = metrics.batch_queue.labels(service, model)
        self._metrics, self._model = metrics, model

    def batch_formed(self, rows: int, items: int, oldest_wait: float, queued_rows: int) -> None:
        self._rows.observe(rows)
        self._wait.observe(oldest_wait)
        self._queue.set(queued_rows)

    def batch_ran(self, rows: int, items: int, seconds: float, error: BaseException | None) -> None:
        self._metrics.observe_model(self._model, self._stage.version, seconds)

    def batch_outcome(self, seconds: float, error: BaseException | None) -> None:
        self._stage.account_batch(seconds, error)

    def rejected(self, rows: int, queued_rows: int) -> None:
        self._queue.set(queued_rows)


class StageRuntime:
    """The running parts of one stage (breaker, cache and, for a model, runner and batcher)
    and the rules for calling it."""

    def __init__(self, spec: StageSpec, metrics: ServiceMetrics, threads: tuple[int, int],
                 cache: CachedComputation | None,
                 exceptions: ExceptionEvents | None = None) -> None:
        self.spec = spec
        self.metrics = metrics
        self.exceptions = exceptions
        self.cache = cache
        self.breaker: CircuitBreaker | None = None
        self.reset_breaker()
        self.runner: Runner | None = (
            as_runner(spec.model, *threads) if spec.kind == "model" else None)
        self.version = spec.version
        self.batcher: Batcher | None = None
        if self.runner is not None and spec.batch is not None:
            self.batcher = Batcher(spec.batch, self.runner.run,
                                   observer=_BatchObserver(metrics, self))
        self.plain = cache is None and self.runner is None
        """A stage function with no cache and no model: the engine starts it with a plain
        call (:meth:`start`); a cached or model stage runs as one coroutine."""

    # -- the breaker: only these methods feed it ------------------------------------------

    def reset_breaker(self) -> None:
        """A fresh breaker (after warm-up), mirrored into ``buttress_breaker_open``."""
        policy = self.spec.breaker
        self.breaker = policy.build() if policy is not None else None
        if self.breaker is not None:
            name, metrics = self.spec.name, self.metrics
            self.breaker.on_change = lambda state: metrics.set_breaker_open(
                name, state is not BreakerState.CLOSED)

    def _account(self, failed: bool | None, *, reached_batcher: bool) -> None:
        """Feed the breaker one call's outcome; ``None``: no verdict on the dependency.

        A call that reached a batcher was counted with its batch (:meth:`account_batch`):
        here it only frees the half-open probe slot it may hold, so one failing batch is one
        failure, not one per request in it."""
        breaker = self.breaker
        if breaker is None:
            return
        if failed is None or (reached_batcher and self.batcher is not None):
            breaker.release_probe()
        elif failed:
            breaker.record_failure()
        else:
            breaker.record_success()

    def account_batch(self, seconds: float, error: BaseException | None) -> None:
        """One outcome per batch: a failing batch or one slower than the stage's own timeout
        is one failure, whatever the deadlines of the requests in it."""
        breaker = self.breaker
        if breaker is None:
            return
        timeout = self.spec.timeout
        if error is not None or (timeout is not None and seconds > timeout):
            breaker.record_failure()
        else:
            breaker.record_success()

    def _judge(self, error: Exception, *, gave_up: bool, reached_batcher: bool,
               request_id: str | None = None) -> Failure:
        """The failure's kind, accounted for in the breaker; an error or one of the stage's
        own timeouts is also an exception event and a log line."""
        failure = failure_of(error)
        counted = counts_against_breaker(failure, caller_gave_up=gave_up)
        self._account(True if counted else None, reached_batcher=reached_batcher)
        if counted:
            self._record(error, failure, request_id)
        return failure

    def _record(self, error: Exception, failure: Failure, request_id: str | None) -> None:
        """The exception event (its traceback only the first time a distinct error is seen
        within a while: :mod:`buttress.observability.exceptions`); an error also gets a log
        line to match (a timeout's is in its event: under load they come by the thousand)."""
        name = self.spec.name
        with_traceback = True
        if self.exceptions is not None:
            event = self.exceptions.record(name, self.spec.categories.of(failure), error,
                                           request_id)
            with_traceback = event["traceback"] is not None
        if failure is not Failure.ERROR:
            return
        if with_traceback:
            log.error("stage %s failed", name, exc_info=error)
        else:
            log.warning("stage %s failed: %s: %s", name, type(error).__name__, error)

    # -- a plain stage (sync or async function, no model, no cache) ------------------------

    def start(self, request: Any, args: list[Any], ctx: RequestContext) -> Any:
        """Run the stage function as far as it goes without suspending: its value (or
        fallback), or, if it suspended, the ``Resumed`` rest of it, to await in this task.

        A plain function rather than a coroutine: most stages finish at once (a memory
        look-up, a sync function), and for them a coroutine per stage costs more than their
        work."""
        spec = self.spec
        breaker = self.breaker
        if breaker is not None and not breaker.allow():
            return self.fallback(request, ctx, spec.categories.unavailable,
                                 "circuit breaker open")
        clock = time.perf_counter()
        try:
            if spec.is_async:
                coro = spec.fn(*args)
                try:
                    waiting_on = coro.send(None)
                except StopIteration as finished:
                    value = finished.value
                else:  # it suspended: only now does it need its timer
                    return value_or_rest(self._finish(Resumed(coro, waiting_on), request, ctx,
                                                      clock))
            else:
                value = spec.fn(*args)
        except Exception as error:
            return self._recover(request, ctx, error, clock, gave_up=False,
                                 reached_batcher=False)
        if breaker is not None:
            breaker.record_success()
        ctx.stage_ms[spec.name] = as_ms(time.perf_counter() - clock)
        return value

    async def run(self, request: Any, args: list[Any], ctx: RequestContext) -> Any:
        """:meth:`start` as one coroutine (for a cache to run on a miss, or a Task)."""
        value = self.start(request, args, ctx)
        return await value if type(value) is Resumed else value

    async def _finish(self, rest: Resumed[Any], request: Any, ctx: RequestContext,
                      clock: float) -> Any:
        """The rest of an async stage that suspended, bounded by the deadline rule."""
        loop = asyncio.get_running_loop()
        until = call_until(ctx.deadline, self.spec.timeout,
                           loop.time() - (time.perf_counter() - clock))
        try:
            async with asyncio.timeout_at(until):
                value = await rest
        except asyncio.CancelledError:
            self._account(None, reached_batcher=False)
            raise
        except Exception as error:
            return self._recover(request, ctx, error, clock,
                                 gave_up=caller_gave_up(ctx.deadline, until),
                                 reached_batcher=False)
        self._account(False, reached_batcher=False)
        ctx.stage_ms[self.spec.name] = as_ms(time.perf_counter() - clock)
        return value

    # -- a model stage ----------------------------------------------------------------------

    async def run_model(self, request: Any, args: list[Any], ctx: RequestContext) -> Any:
        """Build the rows, then predict them (through the batcher, if any)."""
        spec = self.spec
        breaker = self.breaker
        if breaker is not None and not breaker.allow():
            return self.fallback(request, ctx, spec.categories.unavailable,
                                 "circuit breaker open")
        clock = time.perf_counter()
        until = ctx.deadline
        reached = False
        try:
            rows = spec.fn(*args)
            reached = True
            until = call_until(ctx.deadline, spec.timeout, asyncio.get_running_loop().time())
            value = await self.predict(rows, until)
        except asyncio.CancelledError:
            self._account(None, reached_batcher=False)
            raise
        except Exception as error:
            return self._recover(request, ctx, error, clock,
                                 gave_up=caller_gave_up(ctx.deadline, until),
                                 reached_batcher=reached)
        self._account(False, reached_batcher=True)
        ctx.stage_ms[spec.name] = as_ms(time.perf_counter() - clock)
        return value

    async def call_model(self, rows: np.ndarray, deadline: float) -> Any:
        """The model on ``rows`` by the same rules as :meth:`run_model`, for a transport with
        no fallback (``/v2``): a failure raises :class:`StageFailed` with its kind."""
        spec = self.spec
        breaker = self.breaker
        if breaker is not None and not breaker.allow():
            raise StageFailed(spec.name, spec.categories.unavailable,
                              f"model {spec.name!r} is unavailable: circuit breaker open",
                              Failure.UNAVAILABLE)
        now = asyncio.get_running_loop().time()
        until = call_until(deadline, spec.timeout, now)
        try:
            predictions = await self.predict(rows, until)
        except asyncio.CancelledError:
            self._account(None, reached_batcher=False)
            raise
        except Exception as error:
            failure = self._judge(error, gave_up=caller_gave_up(deadline, until),
                                  reached_batcher=True)
            raise StageFailed(spec.name, spec.categories.of(failure),
                              _explain(spec.name, failure, error, until - now),
                              failure) from None
        self._account(False, reached_batcher=True)
        return predictions

    def predict(self, rows: np.ndarray, until: float) -> Awaitable[np.ndarray]:
        """Run the model on ``rows`` through the batcher (if any) or the runner, by ``until``
        (loop time). Raises what the model or batcher raised.

        A plain function returning what to await: a batched call awaits the batcher's own
        ``submit`` directly, with no coroutine of ours around it on the hot path."""
        assert self.runner is not None
        if self.batcher is not None:
            # The batcher holds no rows past their deadline (on time.monotonic's clock), queued
            # or running (one timer per batch): no timer per request here.
            left = until - asyncio.get_running_loop().time()
            return self.batcher.submit(rows, time.monotonic() + left)
        return self._run_alone(rows, until)

    async def _run_alone(self, rows: np.ndarray, until: float) -> np.ndarray:
        assert self.runner is not None
        clock = time.perf_counter()
        async with asyncio.timeout_at(until):
            predictions = await self.runner.run(rows)
        self.metrics.observe_model(self.spec.name, self.version, time.perf_counter() - clock)
        return predictions

    # -- fallbacks --------------------------------------------------------------------------

    def _recover(self, request: Any, ctx: RequestContext, error: Exception, clock: float, *,
                 gave_up: bool, reached_batcher: bool) -> Any:
        """The fallback for a stage that raised, timed out or was refused (``StageFailed``
        if it has none), its breaker fed and the failure logged."""
        failure = self._judge(error, gave_up=gave_up, reached_batcher=reached_batcher,
                              request_id=ctx.request_id)
        if failure is Failure.TIMEOUT and not gave_up:
            ctx.timed_out = True
        category = self.spec.categories.of(failure)
        elapsed = time.perf_counter() - clock
        detail = (f"no answer within {1000 * elapsed:.0f} ms" if failure is Failure.TIMEOUT
                  else f"{type(error).__name__}: {error}")
        return self.fallback(request, ctx, category, detail)

    def fallback(self, request: Any, ctx: RequestContext, category: Category,
                 detail: str) -> Any:
        """The stage's fallback for this request, recorded on ``ctx``; ``StageFailed`` when
        it has none."""
        spec = self.spec
        if not spec.has_fallback:
            ctx.fail(spec.name, category, detail)
            raise StageFailed(spec.name, category, f"stage {spec.name!r} failed: {detail}")
        ctx.record(category, spec.name, detail)
        return spec.fallback_value(request)

    async def aclose(self) -> None:
        """Finish what the batcher holds, then stop the model threads."""
        if self.batcher is not None:
            await self.batcher.aclose()
        if self.runner is not None:
            close = getattr(self.runner, "aclose", None)
            if close is not None:
                await close()
            else:
                self.runner.close()


def _explain(model: str, failure: Failure, error: Exception, budget: float) -> str:
    """A model call's failure, for a client with no fallback to hide it."""
    if failure is Failure.TIMEOUT:
        return f"model {model!r} did not answer within {1000 * budget:.0f} ms"
    if failure is Failure.UNAVAILABLE:
        return f"model {model!r} is unavailable: {error}"
    return f"model {model!r} failed: {type(error).__name__}: {error}"


def value_or_rest(coro: Coroutine[Any, Any, Any]) -> Any:
    """Step ``coro``: its value if it finished at once, else the ``Resumed`` rest of it."""
    step = first_step(coro)
    return step.value if isinstance(step, Finished) else step
