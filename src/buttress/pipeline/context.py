"""Everything one request accumulates on its way through the pipeline.

The pipeline writes it, the transport reads it to set headers, and the event recorder turns it
into the request's one structured event. Plain attributes with ``__slots__``: it is created
for every request, so it stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

from buttress.interface import ContractViolation
from buttress.resilience.categories import Category


@dataclass(frozen=True, slots=True)
class AppliedFallback:
    """A stage (or the input, or a guardrail) that served a fallback, and why."""

    stage: str
    category: Category
    detail: str = ""


class RequestContext:
    __slots__ = (
        "bypass_cache",
        "cache",
        "deadline",
        "error",
        "fallbacks",
        "model_version",
        "request_id",
        "response",
        "stage_ms",
        "started",
        "timed_out",
        "violations",
        "warm_up",
    )

    def __init__(self, request_id: str, started: float, deadline: float) -> None:
        self.request_id = request_id
        self.started = started
        """``loop.time()`` when the request arrived."""
        self.deadline = deadline
        """``loop.time()`` by which the answer must be ready."""
        self.fallbacks: list[AppliedFallback] = []
        self.violations: list[ContractViolation] = []
        self.bypass_cache = False
        """The client sent ``Cache-Control: no-cache``: compute afresh (and refresh the entry)."""
        self.cache = ""
        """``hit``, ``miss``, ``bypass``, or empty when the service has no response cache."""
        self.model_version = ""
        self.response: object = None
        """The response object, when this request built it (a cache hit has only bytes)."""
        self.error: AppliedFallback | None = None
        """The failure that made the request fail (no fallback), if any."""
        self.stage_ms: dict[str, float] = {}
        self.timed_out = False
        """A stage's own timeout fired (not the request's deadline): the server is slow."""
        self.warm_up = False
        """A warm-up request: it must not spend guardrail budgets."""

    def record(self, category: Category, stage: str, detail: str = "") -> None:
        """Note that ``stage`` served (part of) its answer from a fallback."""
        self.fallbacks.append(AppliedFallback(stage, category, detail))

    def fail(self, stage: str, category: Category, detail: str = "") -> None:
        """Note the failure that leaves the request without an answer (no fallback)."""
        self.error = AppliedFallback(stage, category, detail)

    @property
    def fallback_categories(self) -> list[str]:
        """Distinct categories in the order they happened: the ``X-Fallback`` header."""
        if not self.fallbacks:
            return []
        return list(dict.fromkeys(f.category.value for f in self.fallbacks))
