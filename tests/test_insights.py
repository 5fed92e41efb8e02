"""``buttress insights``: SQL over event files a runtime really wrote."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from buttress.cli import app
from buttress.observability.insights import (
    BUILTIN_QUERIES,
    InsightsError,
    run_query,
    saved_query,
)
from tests.test_pipeline import serving
from tests.test_prediction_log import scored_service


async def _write_events(tmp_path: Path) -> Path:
    """A runtime's own event files: successes, a model fallback, a 503, a 400."""
    async with serving(scored_service(), tmp_path) as h:
        for x in (1, 2, 3):
            await h.ask({"x": x, "label": "a"})
        await h.ask({"x": -1})
        await h.ask({"x": 1, "label": "refuse"})
        await h.ask(body=b"{nope")
    return tmp_path / "events"


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(app, ["insights", *args])
    return result


async def test_nested_fields_of_real_events_are_queryable(tmp_path: Path) -> None:
    events = await _write_events(tmp_path)
    result = run_query(events, "SELECT status, prediction.value AS value, prediction.label "
                       "AS label, stage_ms['model'] IS NOT NULL AS timed FROM events "
                       "WHERE kind = 'request' ORDER BY ts")
    assert [row[:3] for row in result.rows] == [
        (200, 2.0, "a"), (200, 4.0, "a"), (200, 6.0, "a"), (200, -1.0, "none"),
        (503, None, "refuse"), (400, None, None)]


async def test_every_builtin_query_runs_on_events_without_violations(tmp_path: Path) -> None:
    """No request had a contract violation or a summary field of the demo: the known fields
    keep their types, so the built-ins still run (and find nothing)."""
    events = await _write_events(tmp_path)
    for name, sql in BUILTIN_QUERIES.items():
        if name == "mean_discount_by_model_version":
            continue  # reads the demo's summary field; the demo's server test runs it
        run_query(events, sql)
    assert run_query(events, BUILTIN_QUERIES["contract_violations_by_field"]).rows == []
    fallbacks = run_query(events, BUILTIN_QUERIES["fallbacks_by_category"]).records()
    assert [(r["category"], r["fallbacks"]) for r in fallbacks] == [("model_error", 1)]


async def test_the_cli_prints_json_and_csv(tmp_path: Path) -> None:
    events = await _write_events(tmp_path)
    sql = ("SELECT status, count(*) AS n FROM events WHERE kind = 'request' "
           "GROUP BY status ORDER BY status")
    result = invoke(sql, "--events", str(events), "--json")
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output) == [{"status": 200, "n": 4}, {"status": 400, "n": 1},
                                           {"status": 503, "n": 1}]
    result = invoke(sql, "--events", str(events), "--csv")
    assert result.output.splitlines() == ["status,n", "200,4", "400,1", "503,1"]
    table = invoke("--saved", "p99_latency_by_stage", "--events", str(events))
    assert table.exit_code == 0, table.output
    assert "(request)" in table.output


async def test_since_keeps_recent_events_and_skips_old_files(tmp_path: Path) -> None:
    events = await _write_events(tmp_path)
    old = events / "events-20200101T000000-1-0001.jsonl"
    old.write_bytes(orjson.dumps({"v": 1, "kind": "request", "ts": 1.0, "status": 599}) + b"\n")
    os.utime(old, (1.0, 1.0))
    everything = run_query(events, "SELECT count(*) FROM events WHERE status = 599")
    assert everything.rows == [(1,)]
    recent = run_query(events, "SELECT count(*) FROM events WHERE kind = 'request'",
                       since=time.time() - 600)
    assert recent.rows == [(6,)]
    result = invoke("SELECT count(*) AS n FROM events WHERE kind = 'request'", "--events",
                    str(events), "--since", "10m", "--json")
    assert orjson.loads(result.output) == [{"n": 6}]


async def test_saved_queries_come_from_the_config(tmp_path: Path) -> None:
    events = await _write_events(tmp_path)
    config = tmp_path / "buttress.toml"
    config.write_text('[insights.queries]\nerrors = "SELECT status, count(*) AS n FROM events '
                      'WHERE status >= 400 GROUP BY ALL ORDER BY status"\n')
    result = invoke("--saved", "errors", "--events", str(events), "--config", str(config),
                    "--json")
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output) == [{"status": 400, "n": 1}, {"status": 503, "n": 1}]
    listed = invoke("--list", "--config", str(config), "--csv")
    assert {line.split(",")[0] for line in listed.output.splitlines()[1:]} >= {
        "errors", *BUILTIN_QUERIES}


def test_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    result = invoke("SELECT 1", "--events", str(tmp_path))
    assert result.exit_code == 2
    assert "no event files" in result.output
    with pytest.raises(InsightsError, match="known: "):
        saved_query("nope", {})
    assert invoke("--events", str(tmp_path)).exit_code == 2  # neither SQL nor --saved
