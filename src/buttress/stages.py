"""Stage declarations: what a stage needs, how long it may take, and what to serve instead.

A stage is a function whose first parameter receives the validated input; every further
parameter names an earlier stage whose result it needs (or is called ``ctx`` to receive the
:class:`~buttress.pipeline.context.RequestContext`). Dependencies are read from the
signature, the way pytest reads fixtures, so the order of stages is derived, not declared
twice, and stages with no dependency between them run concurrently.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from buttress.resilience.breaker import Breaker
from buttress.resilience.categories import Category
from buttress.resilience.durations import Duration, seconds
from buttress.resilience.failures import Failure

if TYPE_CHECKING:
    from buttress.batching import Batch
    from buttress.cache import Cache
    from buttress.registry.rollback_rule import RollbackRule

CONTEXT_PARAMETER = "ctx"


class _NoFallback:
    def __repr__(self) -> str:
        return "NO_FALLBACK"


NO_FALLBACK: Any = _NoFallback()
"""Sentinel: the stage has no fallback, so its failure fails the request (503)."""


@dataclass(frozen=True)
class StageCategories:
    """The category reported when the stage raises, overruns, or is refused by its breaker."""

    error: Category
    timeout: Category
    unavailable: Category

    @classmethod
    def single(cls, category: Category) -> StageCategories:
        return cls(category, category, category)

    def of(self, failure: Failure) -> Category:
        """The category of a failure of this kind at this stage."""
        if failure is Failure.TIMEOUT:
            return self.timeout
        return self.unavailable if failure is Failure.UNAVAILABLE else self.error


MODEL_CATEGORIES = StageCategories(
    Category.MODEL_ERROR, Category.MODEL_TIMEOUT, Category.MODEL_UNAVAILABLE
)


@dataclass(frozen=True)
class StageSpec:
    name: str
    fn: Callable[..., Any]
    dependencies: tuple[str, ...]
    wants_context: bool
    is_async: bool
    timeout: float | None
    fallback: Any
    categories: StageCategories
    breaker: Breaker | None
    kind: str = "stage"
    """``stage``, ``model`` or ``respond``."""
    model: Any = None
    """For ``kind == "model"``: what runs the rows the stage function builds."""
    version: str = ""
    batch: Batch | None = None
    cache: Cache | None = None
    """Sub-module cache of this stage's output (JSON data; arrays come back as lists)."""
    rollback: tuple[RollbackRule, ...] = ()
    """For a registry model: the rules that roll a fresh promotion back by themselves."""

    @property
    def has_fallback(self) -> bool:
        return self.fallback is not NO_FALLBACK

    def fallback_value(self, request: Any) -> Any:
        """The fallback for this request: a function of the input, or a value."""
        if callable(self.fallback):
            return self.fallback(request)
        return self.fallback


def declare(
    fn: Callable[..., Any],
    *,
    name: str | None,
    timeout: Duration | None,
    fallback: Any,
    categories: StageCategories,
    breaker: Breaker | None,
    kind: str = "stage",
    **extra: Any,
) -> StageSpec:
    """Build a :class:`StageSpec` from a decorated function, reading its dependencies."""
    parameters = list(inspect.signature(fn).parameters.values())
    if not parameters:
        raise TypeError(f"stage {fn.__name__}: its first parameter must receive the input")
    names = [p.name for p in parameters[1:]]
    return StageSpec(
        name=name or fn.__name__,
        fn=fn,
        dependencies=tuple(n for n in names if n != CONTEXT_PARAMETER),
        wants_context=CONTEXT_PARAMETER in names,
        is_async=inspect.iscoroutinefunction(fn),
        timeout=None if timeout is None else seconds(timeout, name=f"{fn.__name__} timeout"),
        fallback=fallback,
        categories=categories,
        breaker=breaker,
        kind=kind,
        **extra,
    )


def order_in_levels(
    stages: list[StageSpec], provided: set[str] | frozenset[str] = frozenset()
) -> list[list[StageSpec]]:
    """Group stages into levels: each level depends only on earlier ones (Kahn's algorithm).

    ``provided`` names values available before any stage runs (resources). Raises
    ``ValueError`` naming an unknown dependency or a cycle.
    """
    by_name = {s.name: s for s in stages}
    for stage in stages:
        for dep in stage.dependencies:
            if dep not in by_name and dep not in provided:
                known = ", ".join(sorted({*by_name, *provided})) or "none"
                raise ValueError(
                    f"stage {stage.name!r} asks for {dep!r}, but no stage or resource has "
                    f"that name (known: {known})"
                )
    done: set[str] = set(provided)
    levels: list[list[StageSpec]] = []
    remaining = list(stages)
    while remaining:
        ready = [s for s in remaining if all(d in done for d in s.dependencies)]
        if not ready:
            cycle = ", ".join(s.name for s in remaining)
            raise ValueError(f"stages depend on each other in a cycle: {cycle}")
        levels.append(ready)
        done.update(s.name for s in ready)
        remaining = [s for s in remaining if s.name not in done]
    return levels
