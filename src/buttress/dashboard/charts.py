"""Saved insight queries as dashboard charts: which queries, how each result is drawn, and
running them all once (blocking: DuckDB reads the event files).

A query whose first column is a time is drawn as lines: one per value of its text columns,
the first number column as y (``SELECT minute, model_version, mean_discount_pct, ...``).
Any other query is shown as a table of its first rows. Charts are plain JSON (times as Unix
seconds), so they cross a pipe from the process that runs the queries
(:mod:`buttress.dashboard.query_worker`) unchanged.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from buttress.observability.insights import InsightsError, QueryResult, run_queries

WINDOW = 10 * 60.0
"""The charts show the events of the last 10 minutes."""
MAX_POINTS = 500
MAX_TABLE_ROWS = 20
DEFAULT_CHARTS = ("mean_discount_by_model_version", "p99_latency_by_stage")
"""The built-in queries drawn unless ``dashboard_queries`` says otherwise."""

Chart = dict[str, Any]


def chart_names(configured: Sequence[str] | None, saved: Mapping[str, str]) -> list[str]:
    """The queries to draw: ``dashboard_queries`` if set, else every saved query of the
    service's ``[insights.queries]`` and :data:`DEFAULT_CHARTS`."""
    if configured is not None:
        return list(configured)
    return [*saved, *(name for name in DEFAULT_CHARTS if name not in saved)]


def charts_of(events_dir: str | Path, queries: Mapping[str, str], now: float) -> list[Chart]:
    """Every query (name -> SQL) over the last :data:`WINDOW` of events, as charts; a query
    that cannot run is a chart of kind ``none`` with its reason. DuckDB gets one thread."""
    try:
        results = run_queries(events_dir, queries, since=now - WINDOW, threads=1)
    except InsightsError as error:  # no event files yet
        return [no_data(name, error) for name in queries]
    return [no_data(name, result) if isinstance(result, InsightsError) else chart(name, result)
            for name, result in results.items()]


def chart(name: str, result: QueryResult) -> Chart:
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


def no_data(name: str, error: InsightsError) -> Chart:
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
