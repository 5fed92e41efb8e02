"""Saved insight queries as dashboard charts: run with DuckDB in a thread, now and then.

A page polls every second; DuckDB reads event files. So the queries never run on a poll:
a poll gets the last results and, when they are due, starts one refresh in the background
(single flight: any number of open pages cause one run). A refresh is due ``REFRESH`` seconds
after the last one ended, or later when the last one was slow: never sooner than
``1 / COST_SHARE`` times its own duration, so the charts take at most a tenth of one core
(DuckDB gets one thread) however large the event files grow. Nobody looking, nothing runs.

A query whose first column is a time is drawn as lines: one per value of its text columns,
the first number column as y (``SELECT minute, model_version, mean_discount_pct, ...``).
Any other query is shown as a table of its first rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from buttress.observability.insights import InsightsError, QueryResult, run_queries

log = logging.getLogger("buttress.dashboard")

REFRESH = 5.0
"""Seconds between two refreshes, at least."""
COST_SHARE = 0.1
"""The share of one core the refreshes may take, at most."""
WINDOW = 10 * 60.0
"""The charts show the events of the last 10 minutes."""
MAX_POINTS = 500
MAX_TABLE_ROWS = 20
DEFAULT_CHARTS = ("mean_discount_by_model_version", "p99_latency_by_stage")
"""The built-in queries drawn unless ``dashboard_queries`` says otherwise."""


def chart_names(configured: Sequence[str] | None, saved: Mapping[str, str]) -> list[str]:
    """The queries to draw: ``dashboard_queries`` if set, else every saved query of the
    service's ``[insights.queries]`` and :data:`DEFAULT_CHARTS`."""
    if configured is not None:
        return list(configured)
    return [*saved, *(name for name in DEFAULT_CHARTS if name not in saved)]


def chart(name: str, result: QueryResult) -> dict[str, Any]:
    """One query's result as a chart (``kind`` "lines") or a table (``kind`` "table"), with
    JSON values only: times as Unix seconds, decimals as floats."""
    rows = [tuple(_plain(cell) for cell in row) for row in result.rows]
    columns = result.columns
    first = next((row[0] for row in result.rows if row and row[0] is not None), None)
    numeric = [i for i, column in enumerate(columns)
               if i > 0 and any(isinstance(row[i], int | float) and not isinstance(row[i], bool)
                                for row in rows)]
    if isinstance(first, dt.datetime) and numeric:
        y = numeric[0]
        labels = [i for i in range(1, len(columns)) if i not in numeric]
        series: dict[str, list[tuple[float, float]]] = {}
        for row in rows[-MAX_POINTS:]:
            if row[0] is None or not isinstance(row[y], int | float):
                continue
            label = " ".join(str(row[i]) for i in labels) or columns[y]
            series.setdefault(label, []).append((float(row[0]), float(row[y])))
        return {"name": name, "kind": "lines", "x": columns[0], "y": columns[y],
                "series": [{"name": label, "points": points}
                           for label, points in sorted(series.items())]}
    return {"name": name, "kind": "table", "columns": columns, "rows": rows[:MAX_TABLE_ROWS],
            "more_rows": max(0, len(rows) - MAX_TABLE_ROWS)}


def _no_data(name: str, error: InsightsError) -> dict[str, Any]:
    """A query that could not run (no events yet, or a column this service's events lack)."""
    return {"name": name, "kind": "none", "error": str(error).splitlines()[0][:300]}


def _plain(cell: Any) -> Any:
    if isinstance(cell, dt.datetime):
        aware = cell if cell.tzinfo is not None else cell.replace(tzinfo=dt.UTC)
        return aware.timestamp()
    if isinstance(cell, decimal.Decimal):
        return float(cell)
    if isinstance(cell, float) and not math.isfinite(cell):
        return None
    if cell is None or isinstance(cell, bool | int | float | str):
        return cell
    return str(cell)


class InsightCharts:
    """The charts of the saved queries ``queries`` (name -> SQL) over ``events_dir``."""

    def __init__(self, events_dir: str | Path, queries: Mapping[str, str], *,
                 clock: Callable[[], float] = time.time,
                 timer: Callable[[], float] = time.perf_counter) -> None:
        self.events_dir = Path(events_dir)
        self.queries = dict(queries)
        self._clock = clock
        self._timer = timer
        self._charts: list[dict[str, Any]] = [
            {"name": name, "kind": "pending"} for name in self.queries]
        self._due = 0.0
        self._task: asyncio.Task[None] | None = None
        self.ran_at: float | None = None
        self.seconds: float | None = None
        """How long the last refresh took."""

    def current(self) -> dict[str, Any]:
        """The last charts (``pending`` before the first refresh); starts a refresh if due."""
        now = self._clock()
        if self.queries and self._task is None and now >= self._due:
            self._task = asyncio.get_running_loop().create_task(self._refresh(now),
                                                                name="dashboard-insights")
        return {"ran_at": self.ran_at, "seconds": self.seconds, "window_s": WINDOW,
                "charts": self._charts}

    async def _refresh(self, now: float) -> None:
        try:
            started = self._timer()
            self._charts = await asyncio.to_thread(self._run_all, now)
            self.seconds = self._timer() - started
            self.ran_at = now
            self._due = self._clock() + max(REFRESH, self.seconds / COST_SHARE)
        except Exception:  # a refresh failing must not stop the next one
            log.exception("dashboard insight charts failed")
            self._due = self._clock() + REFRESH
        finally:
            self._task = None

    def _run_all(self, now: float) -> list[dict[str, Any]]:
        try:
            results = run_queries(self.events_dir, self.queries, since=now - WINDOW, threads=1)
        except InsightsError as error:  # no event files yet
            return [_no_data(name, error) for name in self.queries]
        return [_no_data(name, result) if isinstance(result, InsightsError)
                else chart(name, result) for name, result in results.items()]

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
