"""Alert rules as declared in ``buttress.toml`` (``[[alerts]]``), and their PromQL.

A rule watches one number and compares it with a threshold; it fires once the comparison has
held for ``for``. The number is either

* a metric of the service: ``function`` = ``value`` (a gauge, e.g. requests in flight or
  event-loop lag), ``rate`` (a counter's per-second rate over ``window``), ``ratio`` (the rate
  of ``metric`` over the rate of ``over``, e.g. fallbacks per request) or ``quantile`` (of a
  histogram over ``window``, e.g. the p99 latency), each summed over the series that ``match``
  selects; these export to Prometheus as they are;
* or the first column of the first row of an insight query over the last ``window`` of
  events (``query`` SQL or a ``saved`` query's name): business metrics, e.g. the mean discount
  handed out over the last 5 minutes.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from buttress.resilience.durations import seconds

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
BUILTIN_ACTIONS = ("log", "webhook", "rollback")


class AlertRule(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    name: str
    # a metric rule
    metric: str | None = None
    function: Literal["value", "rate", "ratio", "quantile"] = "value"
    match: dict[str, str] = Field(default_factory=dict)
    over: str | None = None
    over_match: dict[str, str] = Field(default_factory=dict)
    quantile: float | None = Field(None, gt=0, lt=1)
    # a query rule
    query: str | None = None
    saved: str | None = None
    promql: str | None = None
    """For a query rule: the same number as PromQL, if a metric has it; then
    ``buttress alerts export-prometheus`` exports it as a recording rule and an alert."""
    # both
    window: float = 300.0
    op: Literal[">", ">=", "<", "<="] = ">"
    threshold: float
    for_: float = Field(0.0, alias="for")
    severity: str = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str = ""
    actions: list[str] = Field(default_factory=lambda: ["log"])
    webhook: str | None = None

    @field_validator("window", "for_", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return seconds(value)

    @field_validator("name", "metric", "over")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(f"{value!r}: use letters, digits and '_' (a Prometheus name)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AlertRule:
        sources = [s for s in (self.metric, self.query, self.saved) if s is not None]
        if len(sources) != 1:
            raise ValueError(f"alert {self.name!r}: give exactly one of metric, query, saved")
        if self.function == "ratio" and self.over is None:
            raise ValueError(f"alert {self.name!r}: a ratio needs over = <denominator metric>")
        if self.function == "quantile" and self.quantile is None:
            raise ValueError(f"alert {self.name!r}: a quantile needs quantile = 0.99 (say)")
        if self.promql is not None and self.metric is not None:
            raise ValueError(f"alert {self.name!r}: promql is for query rules; a metric rule "
                             "exports its own")
        if "webhook" in self.actions and not self.webhook:
            raise ValueError(f"alert {self.name!r}: the webhook action needs webhook = URL")
        return self

    @property
    def is_metric_rule(self) -> bool:
        return self.metric is not None

    def holds(self, value: float | None) -> bool:
        """Whether ``value`` is past the threshold (no value: no data, never)."""
        return value is not None and OPERATORS[self.op](value, self.threshold)

    def describe(self) -> str:
        """The watched number, readably: the PromQL of a metric rule, else the query."""
        if self.metric is not None:
            return promql(self)
        return f"saved query {self.saved}" if self.saved else " ".join((self.query or "").split())


def _selector(metric: str, match: dict[str, str]) -> str:
    if not match:
        return metric
    labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(match.items()))
    return f"{metric}{{{labels}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _range(window: float) -> str:
    return f"{round(window)}s" if window >= 1 else f"{round(window * 1000)}ms"


def promql(rule: AlertRule) -> str:
    """The PromQL of a metric rule's number (not the comparison)."""
    assert rule.metric is not None
    window = _range(rule.window)
    selected = _selector(rule.metric, rule.match)
    if rule.function == "value":
        return f"sum({selected})"
    if rule.function == "rate":
        return f"sum(rate({selected}[{window}]))"
    if rule.function == "ratio":
        assert rule.over is not None
        over = _selector(rule.over, rule.over_match)
        return f"sum(rate({selected}[{window}])) / sum(rate({over}[{window}]))"
    buckets = _selector(f"{rule.metric.removesuffix('_bucket')}_bucket", rule.match)
    return f"histogram_quantile({rule.quantile}, sum by (le) (rate({buckets}[{window}])))"
