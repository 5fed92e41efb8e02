"""What ``GET /dashboard/data`` answers: one JSON document with every panel's numbers.

Built from what the server already has, never from a scrape of its own ``/metrics`` text:

- **metrics**: :meth:`ServiceMetrics.collect_off_loop` (every worker's files under
  ``--workers N``), kept in a :class:`MetricHistory` of ``RATE_WINDOW`` seconds, turned into
  panels by :func:`~buttress.dashboard.panels.metric_panels`;
- **models**: the registry's summary (what ``buttress models list`` shows), for the models the
  service serves from it: aliases, versions, and the version each replica reports serving;
- **alerts**: the state file the evaluating worker writes, whichever worker that is;
- **insights**: the saved queries' charts (:mod:`buttress.dashboard.refresh`).

One document is built at most every ``REUSE`` seconds per worker and shared by every poll in
between (single flight), so ten open pages cost what one does.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from buttress.dashboard.charts import chart_names
from buttress.dashboard.panels import SAMPLES, metric_panels
from buttress.dashboard.refresh import InsightCharts
from buttress.observability.alert_values import MetricHistory
from buttress.observability.alerts import TAKE_OVER_ROUNDS, alert_state_file, read_alert_state
from buttress.observability.insights import saved_query
from buttress.pipeline.follow import replica_id
from buttress.registry import FromRegistry, Registry, RegistryError
from buttress.registry.summary import summarize

if TYPE_CHECKING:
    from buttress.pipeline.runtime import Runtime

RATE_WINDOW = 5.0
"""Rates and quantiles are over the last 5 seconds."""
REUSE = 0.5
"""Seconds a built document answers every poll."""
POLL_MS = 1000
"""How often the page polls (it polls faster while a model switch is under way)."""


class DashboardData:
    def __init__(self, runtime: Runtime, registry: Registry,
                 clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.registry = registry
        settings = runtime.settings
        self._clock = clock
        self._history = MetricHistory(names=SAMPLES, keep=RATE_WINDOW)
        saved = settings.insights.queries
        self.charts = InsightCharts(settings.events_dir, {
            name: saved_query(name, saved)
            for name in chart_names(settings.dashboard_queries, saved)})
        self._alert_file = alert_state_file(settings.events_dir, runtime.service.name)
        self._registry_models = sorted({
            stage.spec.model.name for stage in runtime.pipeline.stages.values()
            if isinstance(stage.spec.model, FromRegistry)})
        self._lock = asyncio.Lock()
        self._document: bytes | None = None
        self._built_at = 0.0

    async def document(self) -> bytes:
        """The JSON document, built afresh at most every ``REUSE`` seconds."""
        async with self._lock:
            now = self._clock()
            if self._document is None or now - self._built_at >= REUSE:
                self._document = orjson.dumps(await self.build(now))
                self._built_at = now
            return self._document

    async def build(self, now: float) -> dict[str, Any]:
        self._history.record(now, await self.runtime.metrics.collect_off_loop())
        span = self._history.span(now, RATE_WINDOW)
        if span is not None:
            then, old, latest, new = span
            panels, window = metric_panels(new, old, latest - then), latest - then
        else:
            latest_snapshot = self._history.latest
            assert latest_snapshot is not None
            panels, window = metric_panels(latest_snapshot[1], None, None), None
        settings = self.runtime.settings
        return {
            "service": self.runtime.service.name, "time": now, "pid": os.getpid(),
            "workers": settings.workers, "window_s": window, "poll_ms": POLL_MS,
            "ready": self.runtime.ready, **panels,
            "models": await self.models(),
            "alerts": self.alerts(now),
            "insights": self.charts.current(),
        }

    async def models(self) -> dict[str, Any]:
        """The model versions per replica, and what a rollback would go back to. A service
        with no registry model shows its declared versions, with no controls."""
        if not self._registry_models:
            replica = replica_id()
            return {"registry": None, "models": [
                {"name": stage, "stable": live.version, "controls": False,
                 "replicas": [{"replica": replica, "version": live.version}]}
                for stage, live in self.runtime.pipeline.models.live.items()]}
        models = []
        for name in self._registry_models:
            try:
                [model] = (await summarize(self.registry, name))["models"]
            except RegistryError as error:
                models.append({"name": name, "controls": False, "error": str(error)})
                continue
            lineage = model["stable_lineage"]
            models.append({
                "name": name, "controls": True, "aliases": model["aliases"],
                "stable": model["aliases"].get("stable"),
                "rollback_to": lineage[-2] if len(lineage) >= 2 else None,
                "versions": [v["version"] for v in model["versions"]],
                "replicas": sorted(({"replica": s["replica"], "version": s["version"],
                                     "reported_at": s["reported_at"]}
                                    for s in model["serving"]), key=lambda s: s["replica"]),
            })
        return {"registry": self.registry.url.redacted(), "models": models}

    def alerts(self, now: float) -> dict[str, Any]:
        """Each configured rule with the state the evaluator last wrote; firing first."""
        settings = self.runtime.settings
        state = read_alert_state(self._alert_file) if settings.alerts else None
        written = state.get("written_at") if state else None
        saved = state["alerts"] if state else {}
        stale = (not isinstance(written, int | float)
                 or now - written > TAKE_OVER_ROUNDS * settings.alerts_interval + 2.0)
        order = {"firing": 0, "pending": 1}
        rules = [{"name": rule.name, "severity": rule.severity,
                  "condition": f"{rule.op} {rule.threshold:g}",
                  "watches": rule.summary or rule.describe(),
                  "state": saved.get(rule.name, {}).get("state", "unknown"),
                  "value": saved.get(rule.name, {}).get("value"),
                  "active_since": saved.get(rule.name, {}).get("active_since")}
                 for rule in settings.alerts]
        rules.sort(key=lambda r: (order.get(r["state"], 2), r["name"]))
        return {"evaluated_at": written, "stale": bool(settings.alerts) and stale,
                "firing": sum(r["state"] == "firing" for r in rules), "rules": rules}

    async def aclose(self) -> None:
        await self.charts.aclose()
