"""``buttress insights "SQL"``: DuckDB over the event files, as a table, JSON or CSV.

``--saved NAME`` runs a saved query (the built-ins, or ``[insights.queries]`` in
``buttress.toml``); ``--since 15m`` keeps recent events only; ``--events DIR`` reads another
directory than the configured ``events_dir``. Exit status 2 on any error, with one line.
"""

from __future__ import annotations

import csv
import datetime
import io
import sys
import time
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from buttress.config import ConfigError, load_settings
from buttress.observability.insights import (
    BUILTIN_QUERIES,
    InsightsError,
    QueryResult,
    run_query,
    saved_query,
)
from buttress.resilience.durations import seconds


def insights(
    sql: Annotated[str | None, typer.Argument(
        help="SQL over the view `events` (one row per event).")] = None,
    saved: Annotated[str | None, typer.Option(
        "--saved", help="Run a saved query by name (see --list).")] = None,
    list_saved: Annotated[bool, typer.Option(
        "--list", help="List the saved queries and exit.")] = False,
    since: Annotated[str | None, typer.Option(
        "--since", help="Only events of the last DURATION, e.g. 15m, 2h.")] = None,
    events: Annotated[str | None, typer.Option(
        "--events", help="Event directory (default: events_dir).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV with a header.")] = False,
    config: Annotated[str | None, typer.Option("--config", help="Path to buttress.toml.")] = None,
) -> None:
    """Query the request, exception and alert events with SQL (DuckDB)."""
    try:
        settings = load_settings(config)
        queries = {**BUILTIN_QUERIES, **settings.insights.queries}
        if list_saved:
            _print(QueryResult(["name", "sql"], [(n, " ".join(q.split()))
                                                 for n, q in sorted(queries.items())]),
                   as_json, as_csv)
            return
        if (sql is None) == (saved is None):
            raise InsightsError("give either SQL or --saved NAME")
        text = sql if sql is not None else saved_query(saved or "", settings.insights.queries)
        start = None if since is None else time.time() - seconds(since, name="--since")
        result = run_query(events or settings.events_dir, text, start)
    except (ConfigError, InsightsError, ValueError) as error:
        typer.echo(f"buttress: error: {error}", err=True)
        raise typer.Exit(code=2) from None
    _print(result, as_json, as_csv)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.UTC).isoformat()
    return value


def _print(result: QueryResult, as_json: bool, as_csv: bool) -> None:
    if as_json:
        records = [{k: _plain(v) for k, v in r.items()} for r in result.records()]
        sys.stdout.write(orjson.dumps(records, default=str, option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    elif as_csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([_plain(v) for v in row] for row in result.rows)
        sys.stdout.write(buffer.getvalue())
    else:
        table = Table(*result.columns, caption=f"{len(result.rows)} rows")
        for row in result.rows:
            table.add_row(*("" if v is None else str(_plain(v)) for v in row))
        Console().print(table)
