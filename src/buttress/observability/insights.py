"""SQL over the event files, with DuckDB: ``buttress insights "SQL"`` and query-based alerts.

The JSONL files are the source of truth; DuckDB reads them in place (no import, no server).
A view ``events`` has one row per event of any kind: the schema's known fields always exist,
with fixed types, so a query does not break on a day when, say, no request had a contract
violation or nothing raised; the other
fields (the service's ``prediction`` summary) keep the types DuckDB infers, so nested fields
read as ``prediction.mean_discount_pct``. A column ``time`` is ``ts`` as a timestamp.

``since`` keeps only recent events and skips files last written before it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

VIOLATION = ("STRUCT(field VARCHAR, kind VARCHAR, expected VARCHAR, received VARCHAR, "
             "message VARCHAR)")
KNOWN_COLUMNS: dict[str, str] = {
    "v": "BIGINT", "kind": "VARCHAR", "ts": "DOUBLE", "service": "VARCHAR",
    "request_id": "VARCHAR", "pid": "BIGINT",
    # request events
    "route": "VARCHAR", "status": "BIGINT", "latency_ms": "DOUBLE", "model_version": "VARCHAR",
    "cache": "VARCHAR", "fallbacks": "VARCHAR[]", "fallback_stages": "VARCHAR[]",
    "violations": f"{VIOLATION}[]", "error_category": "VARCHAR", "error_stage": "VARCHAR",
    "stage_ms": "MAP(VARCHAR, DOUBLE)",
    # exception events
    "stage": "VARCHAR", "category": "VARCHAR", "error_type": "VARCHAR", "message": "VARCHAR",
    "traceback": "VARCHAR", "suppressed_tracebacks": "BIGINT",
    # alert events
    "alert": "VARCHAR", "state": "VARCHAR", "severity": "VARCHAR", "value": "DOUBLE",
    "labels": "MAP(VARCHAR, VARCHAR)", "summary": "VARCHAR",
    # model events (a hot swap, a refused version, an automatic rollback)
    "model": "VARCHAR", "action": "VARCHAR", "version": "VARCHAR",
    "previous_version": "VARCHAR", "reason": "VARCHAR", "detail": "VARCHAR",
    "rule": "VARCHAR", "baseline": "DOUBLE", "issued": "BOOLEAN", "replica": "VARCHAR",
    "seconds": "DOUBLE",
}

BUILTIN_QUERIES: dict[str, str] = {
    "fallbacks_by_category": """
        SELECT time_bucket(INTERVAL 1 minute, time) AS minute, category, count(*) AS fallbacks
        FROM (SELECT time, unnest(fallbacks) AS category FROM events WHERE kind = 'request')
        GROUP BY ALL ORDER BY minute, category""",
    "contract_violations_by_field": """
        SELECT violation.field AS field, violation.kind AS kind, count(*) AS violations
        FROM (SELECT unnest(violations) AS violation FROM events WHERE kind = 'request')
        GROUP BY ALL ORDER BY violations DESC, field, kind""",
    "mean_discount_by_model_version": """
        SELECT time_bucket(INTERVAL 1 minute, time) AS minute, model_version,
               round(avg(prediction.mean_discount_pct), 3) AS mean_discount_pct,
               count(prediction.mean_discount_pct) AS predictions
        FROM events WHERE kind = 'request' AND status = 200
        GROUP BY ALL ORDER BY minute, model_version""",
    "p99_latency_by_stage": """
        SELECT stage, count(*) AS calls, round(quantile_cont(ms, 0.5), 3) AS p50_ms,
               round(quantile_cont(ms, 0.99), 3) AS p99_ms
        FROM (SELECT unnest(map_keys(stage_ms)) AS stage, unnest(map_values(stage_ms)) AS ms
              FROM events WHERE kind = 'request'
              UNION ALL
              SELECT '(request)' AS stage, latency_ms AS ms FROM events
              WHERE kind = 'request' AND route = '/predict')
        GROUP BY ALL ORDER BY stage""",
    "exceptions_by_stage": """
        SELECT stage, category, error_type, count(*) AS exceptions,
               max(time) AS last_seen, any_value(message) AS message
        FROM events WHERE kind = 'exception'
        GROUP BY ALL ORDER BY exceptions DESC""",
}
"""Queries every service has, by name (``buttress insights --saved NAME``).
``mean_discount_by_model_version`` reads a ``mean_discount_pct`` in the prediction summary,
as the discount demo's."""


class InsightsError(Exception):
    """A query could not run: no event files, an unknown saved query, bad SQL."""


@dataclass(frozen=True, slots=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def event_files(directory: str | Path, since: float | None = None) -> list[Path]:
    """The event files that may hold events at or after ``since`` (epoch seconds)."""
    files = []
    for path in sorted(Path(directory).glob("events-*.jsonl")):
        try:
            stat = path.stat()
        except FileNotFoundError:  # deleted by retention meanwhile
            continue
        if stat.st_size and (since is None or stat.st_mtime >= since):
            files.append(path)
    return files


def open_events(directory: str | Path, since: float | None = None, *,
                threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the view ``events`` over the event files in ``directory``.

    ``threads`` caps DuckDB's threads (default: one per core); a server running queries beside
    its requests (the dashboard) gives it one, so a query never takes every core."""
    import duckdb

    files = event_files(directory, since)
    if not files:
        window = "" if since is None else f" written since {time.ctime(since)}"
        raise InsightsError(f"no event files{window} in {str(directory)!r}")
    connection = duckdb.connect(config={"threads": threads} if threads else {})
    names = [str(path) for path in files]
    options = ("format = 'newline_delimited', union_by_name = true, ignore_errors = true, "
               "maximum_object_size = 16777216")
    inferred = connection.execute(
        f"DESCRIBE SELECT * FROM read_json_auto($files, {options}, sample_size = -1)",
        {"files": names}).fetchall()
    # every known field exists (NULL where absent), so a query never depends on whether
    # some kind of event happened to be written
    columns = {**KNOWN_COLUMNS, **{name: kind for name, kind, *_rest in inferred
                                   if name not in KNOWN_COLUMNS}}
    spec = "{" + ", ".join(f"{_literal(n)}: {_literal(t)}" for n, t in columns.items()) + "}"
    where = "" if since is None else f" WHERE ts >= {float(since)!r}"
    file_list = "[" + ", ".join(_literal(n) for n in names) + "]"
    connection.execute(
        f"CREATE VIEW events AS SELECT *, to_timestamp(ts) AS time FROM "
        f"read_json({file_list}, {options}, columns = {spec}){where}")
    return connection


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def run_query(directory: str | Path, sql: str, since: float | None = None, *,
              threads: int | None = None) -> QueryResult:
    """Run ``sql`` over the events in ``directory`` (``since``: epoch seconds)."""
    connection = open_events(directory, since, threads=threads)
    try:
        return _execute(connection, sql)
    finally:
        connection.close()


def run_queries(directory: str | Path, queries: Mapping[str, str], since: float | None = None,
                *, threads: int | None = None) -> dict[str, QueryResult | InsightsError]:
    """Several queries (name -> SQL) over one view of the events: the files are listed and
    their columns inferred once. Each query's result, or the error it alone raised; with no
    event files at all, :class:`InsightsError` is raised."""
    connection = open_events(directory, since, threads=threads)
    results: dict[str, QueryResult | InsightsError] = {}
    try:
        for name, sql in queries.items():
            try:
                results[name] = _execute(connection, sql)
            except InsightsError as error:
                results[name] = error
    finally:
        connection.close()
    return results


def _execute(connection: duckdb.DuckDBPyConnection, sql: str) -> QueryResult:
    import duckdb

    try:
        cursor = connection.execute(sql)
        columns = [d[0] for d in cursor.description or []]
        return QueryResult(columns, cursor.fetchall())
    except duckdb.Error as error:
        raise InsightsError(str(error).strip()) from None


def saved_query(name: str, saved: Mapping[str, str]) -> str:
    """The SQL of a saved query: the service's own (config) first, then the built-ins."""
    queries = {**BUILTIN_QUERIES, **saved}
    try:
        return queries[name]
    except KeyError:
        known = ", ".join(sorted(queries))
        raise InsightsError(f"no saved query {name!r}; known: {known}") from None
