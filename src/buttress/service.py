"""``bt.Service``: the declaration of a prediction service.

A service is a declaration (input and output models, stages, a model, a responder, startup
hooks). It holds no running state: :meth:`Service.build` makes a
:class:`~buttress.pipeline.runtime.Runtime` from it and a :class:`~buttress.config.Settings`, so the
same declaration can be built twice in one process (two apps, two tests).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from buttress.interface import Input, Output
from buttress.registry.declaration import FromRegistry
from buttress.registry.rollback_rule import RollbackRule
from buttress.resilience.breaker import Breaker
from buttress.resilience.categories import Category
from buttress.resilience.durations import Duration
from buttress.stages import (
    MODEL_CATEGORIES,
    NO_FALLBACK,
    StageCategories,
    StageSpec,
    declare,
    order_in_levels,
)

if TYPE_CHECKING:
    from buttress.batching import Batch
    from buttress.cache import Cache
    from buttress.config import Settings
    from buttress.guardrails.policy import Guardrail
    from buttress.observability.alerts import AlertNotice
    from buttress.pipeline.runtime import Runtime

F = TypeVar("F", bound=Callable[..., Any])
Hook = Callable[["Runtime"], Awaitable[None]]
ResourceFactory = Callable[["Runtime"], Awaitable[Any]]
PredictionSummary = Callable[[Any, Any], dict[str, Any] | None]
AlertAction = Callable[["AlertNotice"], Awaitable[None]]
DEFAULT_BREAKER = Breaker()


class Service:
    def __init__(
        self,
        name: str,
        *,
        input: type[Input],
        output: type[Output] | None = None,
        example: dict[str, Any] | None = None,
        description: str = "",
        cache: Cache | None = None,
        guardrails: Sequence[Guardrail] = (),
    ) -> None:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"service name {name!r}: use letters, digits, '-' and '_' only")
        if not (isinstance(input, type) and issubclass(input, Input)):
            raise TypeError("Service(input=...) must be a subclass of bt.Input")
        self.name = name
        self.input = input
        self.output = output
        self.example = example
        """A valid request: shown in the OpenAPI document and used to warm the model up."""
        self.description = description
        self.cache = cache
        """Module-level cache of whole responses, keyed by the validated input and the model
        version; ``None`` for none."""
        self.guardrails = tuple(guardrails)
        """Limits on what the service hands out; a refused request gets the model stages'
        fallbacks (the default prediction)."""
        self.stages: list[StageSpec] = []
        self.responder: StageSpec | None = None
        self.resources: dict[str, ResourceFactory] = {}
        self.startup_hooks: list[Hook] = []
        self.shutdown_hooks: list[Hook] = []
        self.prediction_summary: PredictionSummary | None = None
        self.alert_actions: dict[str, AlertAction] = {}

    # -- declarations ----------------------------------------------------------------------

    # The overloads give ``@svc.stage`` and ``@svc.stage(...)`` the decorated function's own
    # type, so a service type-checks under ``mypy --strict`` (no untyped decorator).
    @overload
    def stage(self, fn: F, /) -> F: ...

    @overload
    def stage(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        timeout: Duration | None = None,
        fallback: Any = NO_FALLBACK,
        category: Category = Category.INTERNAL,
        breaker: Breaker | None = DEFAULT_BREAKER,
        cache: Cache | None = None,
    ) -> Callable[[F], F]: ...

    def stage(
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        timeout: Duration | None = None,
        fallback: Any = NO_FALLBACK,
        category: Category = Category.INTERNAL,
        breaker: Breaker | None = DEFAULT_BREAKER,
        cache: Cache | None = None,
    ) -> F | Callable[[F], F]:
        """Declare a stage. ``fallback`` is a value or a function of the input; ``category``
        is what its failures are reported as (e.g. ``features_unavailable``); ``cache``
        caches its output (a sub-module cache; use ``Cache(key=...)`` to narrow the key)."""

        def register(func: F) -> F:
            self._add(declare(func, name=name, timeout=timeout, fallback=fallback,
                              categories=StageCategories.single(Category(category)),
                              breaker=breaker, cache=cache))
            return func

        return register(fn) if fn is not None else register

    @overload
    def model(
        self,
        fn: F,
        /,
        *,
        model: Any,
        version: str = "v1",
        name: str | None = None,
        timeout: Duration | None = None,
        fallback: Any = NO_FALLBACK,
        breaker: Breaker | None = DEFAULT_BREAKER,
        batch: Batch | None = None,
        rollback: Sequence[RollbackRule] = (),
    ) -> F: ...

    @overload
    def model(
        self,
        fn: None = None,
        /,
        *,
        model: Any,
        version: str = "v1",
        name: str | None = None,
        timeout: Duration | None = None,
        fallback: Any = NO_FALLBACK,
        breaker: Breaker | None = DEFAULT_BREAKER,
        batch: Batch | None = None,
        rollback: Sequence[RollbackRule] = (),
    ) -> Callable[[F], F]: ...

    def model(
        self,
        fn: F | None = None,
        /,
        *,
        model: Any,
        version: str = "v1",
        name: str | None = None,
        timeout: Duration | None = None,
        fallback: Any = NO_FALLBACK,
        breaker: Breaker | None = DEFAULT_BREAKER,
        batch: Batch | None = None,
        rollback: Sequence[RollbackRule] = (),
    ) -> F | Callable[[F], F]:
        """Declare the model stage. The decorated function builds the model's input rows
        (a 2-D array) from the request and the stages it names; ``model`` (anything with
        ``.predict(rows)``, a function of rows, or a Runner) turns them into predictions,
        off the event loop. Errors are ``model_error``, overruns ``model_timeout``, an open
        breaker or a full queue ``model_unavailable``.

        ``model=bt.FromRegistry("name", alias="stable")`` serves what the alias points at
        and follows it while running (a hot swap; ``version`` is then the registry's).
        ``rollback`` rules (``bt.RollbackRule``) roll a fresh promotion back by themselves."""
        rules = tuple(rollback)
        if rules and not isinstance(model, FromRegistry):
            raise ValueError("rollback rules need a model from the registry: "
                             "model=bt.FromRegistry(...)")
        for rule in rules:
            if not isinstance(rule, RollbackRule):
                raise TypeError(f"rollback takes bt.RollbackRule objects, not {rule!r}")
        if len({rule.name for rule in rules}) != len(rules):
            raise ValueError("rollback rules need distinct names")

        def register(func: F) -> F:
            self._add(declare(func, name=name, timeout=timeout, fallback=fallback,
                              categories=MODEL_CATEGORIES, breaker=breaker, kind="model",
                              model=model, version=version, batch=batch, rollback=rules))
            return func

        return register(fn) if fn is not None else register

    def respond(self, fn: F) -> F:
        """Declare the post-processing that turns stage results into the Output."""
        self.responder = declare(fn, name="respond", timeout=None, fallback=NO_FALLBACK,
                                 categories=StageCategories.single(Category.INTERNAL),
                                 breaker=None, kind="respond")
        return fn

    def log_prediction(self, fn: PredictionSummary) -> PredictionSummary:
        """Declare what each request's event says about its prediction (its ``prediction``
        field): ``fn(request, response)`` returns a small dict of JSON values, e.g. the order
        value and the discount handed out. ``response`` is the Output the client got, or
        None when the request failed.

        It runs in the event writer, never in the request: it costs the response nothing,
        and an exception in it leaves ``{"error": ...}`` in the field, not a failed request.
        Every fallback and failure is summarized; clean successes by ``log_sample_rate``.
        """
        if self.prediction_summary is not None:
            raise ValueError(f"service {self.name!r} already has a @log_prediction function")
        self.prediction_summary = fn
        return fn

    def alert_action(self, name: str) -> Callable[[AlertAction], AlertAction]:
        """Declare an action alert rules can name in ``actions`` (``await fn(notice)`` when
        a rule fires or resolves), or replace a built-in one: the model registry plugs its
        ``rollback`` in here."""

        def register(fn: AlertAction) -> AlertAction:
            self.alert_actions[name] = fn
            return fn

        return register

    def resource(self, factory: ResourceFactory) -> ResourceFactory:
        """Declare a resource (a feature store, a client) built when the server starts.

        ``await factory(runtime)`` returns the object; a stage receives it through a
        parameter with the factory's name. If the object has ``aclose()``, it is awaited at
        shutdown. Each built runtime gets its own instance.
        """
        name = factory.__name__
        if name in self.resources or any(s.name == name for s in self.stages):
            raise ValueError(f"service {self.name!r} already has a stage or resource {name!r}")
        self.resources[name] = factory
        return factory

    def on_startup(self, hook: Hook) -> Hook:
        """Run ``await hook(runtime)`` when the server starts, before it reports ready."""
        self.startup_hooks.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        self.shutdown_hooks.append(hook)
        return hook

    def _add(self, spec: StageSpec) -> None:
        # "response" names the response cache (its metrics label and invalidation target)
        taken = spec.name in ("respond", "response") or spec.name in self.resources
        if taken or any(s.name == spec.name for s in self.stages):
            raise ValueError(f"service {self.name!r} already has a stage called {spec.name!r}")
        self.stages.append(spec)

    # -- building --------------------------------------------------------------------------

    @property
    def models(self) -> list[StageSpec]:
        return [s for s in self.stages if s.kind == "model"]

    def check(self) -> None:
        """Raise ``ValueError`` if the declaration cannot be served (no responder, an unknown
        dependency, a cycle, guardrails without a default prediction)."""
        if self.responder is None:
            raise ValueError(f"service {self.name!r} has no @<service>.respond function")
        order_in_levels([*self.stages, self.responder], provided=set(self.resources))
        if self.guardrails and not any(m.has_fallback for m in self.models):
            raise ValueError(f"service {self.name!r} has guardrails, so its model stage needs a "
                             "fallback: it is what a refused request gets")

    def build(self, settings: Settings | None = None) -> Runtime:
        from buttress.config import Settings
        from buttress.pipeline.runtime import Runtime

        self.check()
        return Runtime(self, settings or Settings())

    def __repr__(self) -> str:
        stages = ", ".join(s.name for s in self.stages)
        return f"<Service {self.name!r} stages=[{stages}]>"
