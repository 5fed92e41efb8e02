"""Runs one validated request through the stages, with deadlines, breakers and fallbacks.

The pipeline knows no HTTP: it takes a parsed input and a :class:`RequestContext` and returns
the response body, or raises :class:`StageFailed` when a stage without a fallback failed. So
the same pipeline can later serve a message stream or a batch job.

The engine schedules; each stage's rules (breaker, timeout, deadline, fallback) live in
:mod:`buttress.pipeline.stage`. Cost matters here (docs/performance.md): stages of a level
become Tasks only once one of them suspends (``buttress.pipeline.stepping`` says why that is
safe), and a lone stage in its level is awaited directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import orjson

from buttress.guardrails import Guardrails
from buttress.interface import Output, ParsedInput
from buttress.pipeline.cache_gate import CachedComputation
from buttress.pipeline.context import RequestContext
from buttress.pipeline.guardrail_gate import GuardrailGate
from buttress.pipeline.stage import StageFailed, StageRuntime, value_or_rest
from buttress.pipeline.stepping import Resumed
from buttress.resilience.categories import Category
from buttress.resilience.failures import Failure
from buttress.stages import StageSpec, order_in_levels

if TYPE_CHECKING:
    from buttress.backends import Connections
    from buttress.cache import Cache
    from buttress.observability.exceptions import ExceptionEvents
    from buttress.observability.metrics import ServiceMetrics
    from buttress.service import Service

log = logging.getLogger("buttress.pipeline.engine")


_NOT_BUILT: Any = object()
SHARED_WAIT_GRACE = 0.005
"""A request sharing another's cached computation waits at most this long past its deadline
(its own computation may finish just after the deadline; then it is still worth serving)."""


class Pipeline:
    def __init__(self, service: Service, metrics: ServiceMetrics,
                 exceptions: ExceptionEvents | None = None, *, model_threads: int = 2,
                 native_threads: int = 1, cache_url: str = "memory://",
                 guardrail_url: str = "memory://") -> None:
        assert service.responder is not None
        self.metrics = metrics
        self.resources: dict[str, Any] = {}
        """Values of the service's resources, filled in when the runtime starts."""

        def cache(policy: Cache | None, name: str) -> CachedComputation | None:
            if policy is None:
                return None
            return CachedComputation(policy, service=service.name, name=name,
                                     default_url=cache_url, metrics=metrics)

        self.response_cache = cache(service.cache, "response")
        threads = (model_threads, native_threads)
        self.exceptions = exceptions
        self.stages = {s.name: StageRuntime(s, metrics, threads, cache(s.cache, s.name),
                                            exceptions) for s in service.stages}
        self.levels = [[self.stages[s.name] for s in level] for level in
                       order_in_levels(service.stages, provided=set(service.resources))]
        """The stages in dependency order: each level needs only earlier ones."""
        self.responder = service.responder
        self.output_model = service.output
        models = [r for r in self.stages.values() if r.runner is not None]
        self.model_version = ",".join(r.version for r in models)
        self.model_stages = frozenset(r.spec.name for r in models)
        self.every_stage_has_fallback = all(r.spec.has_fallback for r in self.stages.values())
        self.gate: GuardrailGate | None = None
        if service.guardrails:
            self.gate = GuardrailGate(
                Guardrails(service.guardrails, guardrail_url, namespace=service.name), metrics)

    @property
    def caches(self) -> list[CachedComputation]:
        stage_caches = [r.cache for r in self.stages.values() if r.cache is not None]
        return [c for c in (self.response_cache, *stage_caches) if c is not None]

    async def open(self, connections: Connections) -> None:
        for cached in self.caches:
            await cached.cache.open(connections)
        if self.gate is not None:
            await self.gate.guardrails.open(connections)
            self.gate.start()

    async def run(self, parsed: ParsedInput, ctx: RequestContext) -> bytes:
        request = parsed.value
        if parsed.defaulted:
            ctx.record(Category.INPUT_CONTRACT, "input")
        ctx.model_version = self.model_version
        cache = self.response_cache
        body: bytes | None = None
        response: Any = _NOT_BUILT
        results: dict[str, Any] = {}  # filled only if this request computes its answer
        if cache is None:
            response = await self._compute(request, ctx, results=results)
        else:
            computed: list[Any] = []

            async def compute_text() -> str:
                computed.append(await self._compute(request, ctx, results=results))
                return self._serialize(computed[0]).decode()

            key = cache.key(request, self.model_version)
            try:
                async with asyncio.timeout_at(ctx.deadline + SHARED_WAIT_GRACE):
                    text, ctx.cache = await cache.run(key, ctx, compute_text,
                                                      bypass=ctx.bypass_cache)
            except TimeoutError:
                # Only a request waiting on another's computation gets here (its own stages
                # fall back before the deadline): answer with the default prediction.
                ctx.cache = "miss"
                for name in self.model_stages:
                    ctx.record(Category.MODEL_TIMEOUT, name, "deadline passed while waiting "
                               "for an identical request's computation")
                response = await self._compute(request, ctx, default_prediction=True)
            else:
                body = str(text).encode()
                if computed:  # this request computed it: the object is at hand
                    response = computed[0]
        guarded = self.gate is not None and not ctx.warm_up
        if guarded and not any(f.stage in self.model_stages for f in ctx.fallbacks):
            if response is _NOT_BUILT:
                response = self._decode(body or b"")
            if not await self._admitted(request, response, ctx):
                response = await self._default_response(request, ctx, results)
                body = None
        if response is not _NOT_BUILT:
            ctx.response = response  # for the prediction summary: no need to decode the body
        return body if body is not None else self._serialize(response)

    def shed(self, parsed: ParsedInput, ctx: RequestContext, *, with_fallback: bool) -> bytes:
        """The answer for a request beyond the door's concurrency limit, at once: every
        stage's fallback, no stage called (``StageFailed`` when a stage has none, or when the
        service answers overload with 503)."""
        request = parsed.value
        if parsed.defaulted:
            ctx.record(Category.INPUT_CONTRACT, "input")
        ctx.model_version = self.model_version
        if not (with_fallback and self.every_stage_has_fallback):
            ctx.fail("admission", Category.OVERLOADED, "at the concurrency limit")
            raise StageFailed("admission", Category.OVERLOADED,
                              "the server is at its concurrency limit: retry shortly",
                              Failure.UNAVAILABLE)
        ctx.record(Category.OVERLOADED, "admission")
        results = dict(self.resources)
        for level in self.levels:
            for stage in level:
                results[stage.spec.name] = stage.spec.fallback_value(request)
        return self._serialize(self._respond(request, results, ctx))

    async def _admitted(self, request: Any, response: Any, ctx: RequestContext) -> bool:
        """Ask the guardrails; record what they said. False: serve the default prediction."""
        assert self.gate is not None
        try:
            # bounded by the deadline too: a slow Redis must not hold an answer that is ready
            async with asyncio.timeout_at(ctx.deadline + SHARED_WAIT_GRACE):
                decision = await self.gate.admit(request, response)
        except TimeoutError:
            decision = self.gate.out_of_time()
        category = decision.category
        if category is not None:
            detail = ",".join(decision.refused_by) or decision.error or ""
            ctx.record(category, "guardrails", detail)
        return decision.admitted

    async def _default_response(self, request: Any, ctx: RequestContext,
                                results: dict[str, Any]) -> Any:
        """The response with every model stage's fallback. Reuses this request's other stage
        results when it computed them (no second feature look-up just when a budget ran out);
        a cached answer has none, so the stages run again."""
        if not results:
            return await self._compute(request, ctx, default_prediction=True)
        for name in self.model_stages:
            spec = self.stages[name].spec
            if spec.has_fallback:
                results[name] = spec.fallback_value(request)
        return self._respond(request, results, ctx)

    def _decode(self, body: bytes) -> Any:
        """A cached body back into the response object the guardrails measure."""
        if self.output_model is not None:
            return self.output_model.model_validate_json(body)
        return orjson.loads(body)

    async def _compute(self, request: Any, ctx: RequestContext,
                       default_prediction: bool = False,
                       results: dict[str, Any] | None = None) -> Any:
        """Run the stages and the responder; ``default_prediction`` serves every model stage's
        fallback instead of calling it (a guardrail refused the model's answer)."""
        if results is None:
            results = {}
        results.update(self.resources)
        for level in self.levels:
            if default_prediction:
                defaults = [r for r in level if r.spec.kind == "model" and r.spec.has_fallback]
                results.update((r.spec.name, r.spec.fallback_value(request)) for r in defaults)
                level = [r for r in level if r not in defaults]
            if len(level) == 1:
                stage = level[0]
                if stage.plain:
                    args = self._arguments(stage.spec, request, results, ctx)
                    value = stage.start(request, args, ctx)
                    if type(value) is Resumed:
                        value = await value
                else:  # a cached or model stage is one coroutine anyway: await it directly
                    value = await self._stage_coroutine(stage, request, results, ctx)
                results[stage.spec.name] = value
            elif level:
                rest = self._start_level(level, request, results, ctx)
                if rest is not None:
                    await rest
        return self._respond(request, results, ctx)

    def _start_level(self, level: list[StageRuntime], request: Any, results: dict[str, Any],
                     ctx: RequestContext) -> Coroutine[Any, Any, None] | None:
        """Start independent stages, paying for concurrency only where it is used.

        Each stage starts in this task: one that finishes without suspending (a memory
        look-up) costs no Task and no timer, and its result is stored at once. The first one
        that suspends goes on in this task; the stages after it, not started yet, start as
        Tasks then. Returns what is left to await, or None when every stage finished.
        """
        for index, stage in enumerate(level):
            if stage.plain:
                value = stage.start(request, self._arguments(stage.spec, request, results, ctx),
                                    ctx)
            else:
                value = value_or_rest(self._stage_coroutine(stage, request, results, ctx))
            if type(value) is not Resumed:
                results[stage.spec.name] = value
                continue
            return self._finish_level(stage.spec.name, value, level[index + 1:], request,
                                      results, ctx)
        return None

    async def _finish_level(self, name: str, suspended: Resumed[Any], rest: list[StageRuntime],
                            request: Any, results: dict[str, Any], ctx: RequestContext) -> None:
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._stage_coroutine(stage, request, results, ctx))
                 for stage in rest]
        try:
            results[name] = await suspended
            for stage, task in zip(rest, tasks, strict=True):
                results[stage.spec.name] = await task
        except BaseException:
            for task in tasks:
                task.cancel()
            raise

    def _arguments(self, spec: StageSpec, request: Any, results: dict[str, Any],
                   ctx: RequestContext) -> list[Any]:
        args = [request, *map(results.__getitem__, spec.dependencies)]
        if spec.wants_context:
            args.append(ctx)
        return args

    def _stage_coroutine(self, stage: StageRuntime, request: Any, results: dict[str, Any],
                         ctx: RequestContext) -> Coroutine[Any, Any, Any]:
        """The whole stage, its cache included, as one coroutine (a Task when its level runs
        concurrently)."""
        if stage.cache is not None:
            return self._run_cached_stage(stage, request, results, ctx)
        return self._compute_stage(stage, request, results, ctx)

    def _compute_stage(self, stage: StageRuntime, request: Any, results: dict[str, Any],
                       ctx: RequestContext) -> Coroutine[Any, Any, Any]:
        """The stage without its cache (what its cache runs on a miss), as one coroutine."""
        args = self._arguments(stage.spec, request, results, ctx)
        if stage.runner is not None:
            return stage.run_model(request, args, ctx)
        return stage.run(request, args, ctx)

    async def _run_cached_stage(self, stage: StageRuntime, request: Any,
                                results: dict[str, Any], ctx: RequestContext) -> Any:
        assert stage.cache is not None
        key = stage.cache.key(request, self.model_version)
        try:
            async with asyncio.timeout_at(ctx.deadline + SHARED_WAIT_GRACE):
                value, _status = await stage.cache.run(
                    key, ctx, lambda: self._compute_stage(stage, request, results, ctx))
        except TimeoutError:  # waited on another request's computation past our deadline
            return stage.fallback(request, ctx, stage.spec.categories.timeout,
                                  "deadline passed while waiting for a shared computation")
        return value

    def _respond(self, request: Any, results: dict[str, Any], ctx: RequestContext) -> Any:
        spec = self.responder
        try:
            return spec.fn(*self._arguments(spec, request, results, ctx))
        except Exception as error:
            log.exception("respond failed")
            if self.exceptions is not None:
                self.exceptions.record("respond", Category.INTERNAL, error, ctx.request_id)
            ctx.fail("respond", Category.INTERNAL, str(error))
            raise StageFailed("respond", Category.INTERNAL,
                              f"building the response failed: {type(error).__name__}") from error

    @staticmethod
    def _serialize(response: Any) -> bytes:
        if isinstance(response, Output):
            return response.to_json()
        return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)

    def reset_breakers(self) -> None:
        for stage in self.stages.values():
            stage.reset_breaker()
            reset_remote = getattr(stage.runner, "reset_breaker", None)
            if reset_remote is not None:
                reset_remote()

    async def aclose(self) -> None:
        """Finish what the batchers hold, then stop the model threads and the gates."""
        for stage in self.stages.values():
            await stage.aclose()
        for cached in self.caches:
            await cached.cache.aclose()
        if self.gate is not None:
            await self.gate.aclose()
