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

from buttress.batching import Batcher
from buttress.pipeline.live import LiveModel, VersionObserver
from buttress.pipeline.stepping import Finished, Resumed, first_step
from buttress.registry.declaration import FromRegistry
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
        self._threads = threads
        self.is_model = spec.kind == "model"
        self.from_registry = isinstance(spec.model, FromRegistry)
        """A model named by registry alias: its versions come and go (``pipeline/follow.py``)."""
        self._breaker: CircuitBreaker | None = None
        """A plain stage's breaker; a model stage has one per version (:class:`LiveModel`)."""
        self.live: LiveModel | None = None
        """A model stage's current version (None until a registry model is loaded)."""
        if self.is_model:
            if not self.from_registry:
                self.live = self.build_live(spec.model, spec.version)
        else:
            self._breaker = self.new_breaker()
        self.plain = cache is None and not self.is_model
        """A stage function with no cache and no model: the engine starts it with a plain
        call (:meth:`start`); a cached or model stage runs as one coroutine."""

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The stage's breaker; a model stage's is its current version's."""
        return self.live.breaker if self.live is not None else self._breaker

    @property
    def runner(self) -> Runner | None:
        return self.live.runner if self.live is not None else None

    @property
    def batcher(self) -> Batcher | None:
        return self.live.batcher if self.live is not None else None

    @property
    def version(self) -> str:
        return self.live.version if self.live is not None else ""

    def build_live(self, model: Any, version: str, *, mirrored: bool = True) -> LiveModel:
        """A running version of this model stage: its runner (model threads), its own batcher
        and its own breaker (``mirrored`` into ``buttress_breaker_open``; a candidate's is
        not, until it serves). Not serving until the pipeline's :class:`ModelSet` names it."""
        breaker = self.new_breaker() if mirrored else (
            self.spec.breaker.build() if self.spec.breaker is not None else None)
        live = LiveModel(version, as_runner(model, *self._threads), breaker)
        if self.spec.batch is not None:
            live.batcher = Batcher(self.spec.batch, live.runner.run,
                                   observer=VersionObserver(self.metrics, self, live))
        return live

    # -- the breaker: only these methods feed it ------------------------------------------

    def new_breaker(self) -> CircuitBreaker | None:
        """A fresh breaker, mirrored into ``buttress_breaker_open``."""
        policy = self.spec.breaker
        breaker = policy.build() if policy is not None else None
        if breaker is not None:
            name, metrics = self.spec.name, self.metrics
            breaker.on_change = lambda state: metrics.set_breaker_open(
                name, state is not BreakerState.CLOSED)
        return breaker

    def reset_breaker(self, live: LiveModel | None = None) -> None:
        """A fresh breaker (after warm-up): the stage's, or that of the model version
        ``live`` (default: the current one)."""
        if not self.is_model:
            self._breaker = self.new_breaker()
            return
        live = live or self.live
        if live is not None:
            live.breaker = self.new_breaker()
            self.metrics.set_breaker_open(self.spec.name, False)

    def _account(self, breaker: CircuitBreaker | None, failed: bool | None, *,
                 batched: bool, admitted_in: int) -> None:
        """Feed ``breaker`` one call's outcome; ``None``: no verdict on the dependency.

        A call that reached a batcher (``batched``) was counted with its batch
        (:meth:`account_batch`): here it only frees the half-open probe slot it may hold, so
        one failing batch is one failure, not one per request in it. ``admitted_in`` is the
        breaker's period when the call was let through: a call from before the current
        half-open period holds no probe slot to free."""
        if breaker is None:
            return
        if failed is None or batched:
            breaker.release_probe(admitted_in)
        elif failed:
            breaker.record_failure()
        else:
            breaker.record_success()

    def account_batch(self, breaker: CircuitBreaker | None, seconds: float,
                      error: BaseException | None) -> None:
        """One outcome per batch: a failing batch or one slower than the stage's own timeout
        is one failure, whatever the deadlines of the requests in it."""
        if breaker is None:
            return
        timeout = self.spec.timeout
        if error is not None or (timeout is not None and seconds > timeout):
            breaker.record_failure()
        else:
            breaker.record_success()

    def _judge(self, breaker: CircuitBreaker | None, error: Exception, *, gave_up: bool,
               batched: bool, admitted_in: int, request_id: str | None = None) -> Failure:
        """The failure's kind, accounted for in the breaker; an error or one of the stage's
        own timeouts is also an exception event and a log line."""
        failure = failure_of(error)
        counted = counts_against_breaker(failure, caller_gave_up=gave_up)
        self._account(breaker, True if counted else None, batched=batched,
                      admitted_in=admitted_in)
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
        breaker = self._breaker
        if breaker is not None and not breaker.allow():
            return self.fallback(request, ctx, spec.categories.unavailable,
                                 "circuit breaker open")
        admitted_in = breaker.period if breaker is not None else 0
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
                                                      clock, admitted_in))
            else:
                value = spec.fn(*args)
        except Exception as error:
            return self._recover(breaker, request, ctx, error, clock, gave_up=False,
                                 batched=False, admitted_in=admitted_in)
        if breaker is not None:
            breaker.record_success()
        ctx.stage_ms[spec.name] = as_ms(time.perf_counter() - clock)
        return value

    async def run(self, request: Any, args: list[Any], ctx: RequestContext) -> Any:
        """:meth:`start` as one coroutine (for a cache to run on a miss, or a Task)."""
        value = self.start(request, args, ctx)
        return await value if type(value) is Resumed else value

    async def _finish(self, rest: Resumed[Any], request: Any, ctx: RequestContext,
                      clock: float, admitted_in: int) -> Any:
        """The rest of an async stage that suspended, bounded by the deadline rule."""
        loop = asyncio.get_running_loop()
        until = call_until(ctx.deadline, self.spec.timeout,
                           loop.time() - (time.perf_counter() - clock))
        try:
            async with asyncio.timeout_at(until):
                value = await rest
        except asyncio.CancelledError:
            self._account(self._breaker, None, batched=False, admitted_in=admitted_in)
            raise
        except Exception as error:
            return self._recover(self._breaker, request, ctx, error, clock,
                                 gave_up=caller_gave_up(ctx.deadline, until), batched=False,
                                 admitted_in=admitted_in)
        self._account(self._breaker, False, batched=False, admitted_in=admitted_in)
        ctx.stage_ms[self.spec.name] = as_ms(time.perf_counter() - clock)
        return value

    # -- a model stage ----------------------------------------------------------------------

    async def run_model(self, request: Any, args: list[Any], ctx: RequestContext) -> Any:
        """Build the rows, then predict them (through the batcher, if any) with the version
        the request's :class:`ModelSet` names."""
        spec = self.spec
        live = ctx.models.live[spec.name]  # type: ignore[union-attr]  # set by the engine
        breaker = live.breaker
        if breaker is not None and not breaker.allow():
            return self.fallback(request, ctx, spec.categories.unavailable,
                                 "circuit breaker open")
        admitted_in = breaker.period if breaker is not None else 0
        clock = time.perf_counter()
        until = ctx.deadline
        reached = False
        try:
            rows = spec.fn(*args)
            reached = live.batcher is not None
            until = call_until(ctx.deadline, spec.timeout, asyncio.get_running_loop().time())
            value = await self.predict(live, rows, until)
        except asyncio.CancelledError:
            self._account(breaker, None, batched=False, admitted_in=admitted_in)
            raise
        except Exception as error:
            return self._recover(breaker, request, ctx, error, clock,
                                 gave_up=caller_gave_up(ctx.deadline, until), batched=reached,
                                 admitted_in=admitted_in)
        self._account(breaker, False, batched=reached, admitted_in=admitted_in)
        ctx.stage_ms[spec.name] = as_ms(time.perf_counter() - clock)
        return value

    async def call_model(self, live: LiveModel, rows: np.ndarray, deadline: float) -> Any:
        """The model version ``live`` on ``rows`` by the same rules as :meth:`run_model`, for
        a transport with no fallback (``/v2``): a failure raises :class:`StageFailed` with
        its kind."""
        spec = self.spec
        breaker = live.breaker
        if breaker is not None and not breaker.allow():
            raise StageFailed(spec.name, spec.categories.unavailable,
                              f"model {spec.name!r} is unavailable: circuit breaker open",
                              Failure.UNAVAILABLE)
        admitted_in = breaker.period if breaker is not None else 0
        now = asyncio.get_running_loop().time()
        until = call_until(deadline, spec.timeout, now)
        batched = live.batcher is not None
        try:
            predictions = await self.predict(live, rows, until)
        except asyncio.CancelledError:
            self._account(breaker, None, batched=False, admitted_in=admitted_in)
            raise
        except Exception as error:
            failure = self._judge(breaker, error, gave_up=caller_gave_up(deadline, until),
                                  batched=batched, admitted_in=admitted_in)
            raise StageFailed(spec.name, spec.categories.of(failure),
                              _explain(spec.name, failure, error, until - now),
                              failure) from None
        self._account(breaker, False, batched=batched, admitted_in=admitted_in)
        return predictions

    def predict(self, live: LiveModel, rows: np.ndarray, until: float
                ) -> Awaitable[np.ndarray]:
        """Run the model on ``rows`` through the batcher (if any) or the runner, by ``until``
        (loop time). Raises what the model or batcher raised.

        A plain function returning what to await: a batched call awaits the batcher's own
        ``submit`` directly, with no coroutine of ours around it on the hot path."""
        batcher = live.batcher
        if batcher is not None:
            # The batcher holds no rows past their deadline (on time.monotonic's clock), queued
            # or running (one timer per batch): no timer per request here.
            left = until - asyncio.get_running_loop().time()
            return batcher.submit(rows, time.monotonic() + left)
        return self._run_alone(live, rows, until)

    async def _run_alone(self, live: LiveModel, rows: np.ndarray, until: float) -> np.ndarray:
        clock = time.perf_counter()
        async with asyncio.timeout_at(until):
            predictions = await live.runner.run(rows)
        self.metrics.observe_model(self.spec.name, live.version, time.perf_counter() - clock)
        return predictions

    # -- fallbacks --------------------------------------------------------------------------

    def _recover(self, breaker: CircuitBreaker | None, request: Any, ctx: RequestContext,
                 error: Exception, clock: float, *, gave_up: bool, batched: bool,
                 admitted_in: int) -> Any:
        """The fallback for a stage that raised, timed out or was refused (``StageFailed``
        if it has none), its breaker fed and the failure logged."""
        failure = self._judge(breaker, error, gave_up=gave_up, batched=batched,
                              admitted_in=admitted_in, request_id=ctx.request_id)
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
        """Finish what the current version's batcher holds, then stop its model threads."""
        if self.live is not None:
            await self.live.aclose()


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
