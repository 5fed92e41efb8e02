"""The dashboard without a browser: its metric panels from two snapshots, its insight charts,
and its routes on the demo in process (the page and its files, the data's shape and numbers,
alerts from the state file, the admin API refusing a rollback without the token)."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import buttress as bt
from buttress.config import ConfigError
from buttress.dashboard import charts, refresh
from buttress.dashboard.charts import chart, chart_names
from buttress.dashboard.data import REUSE
from buttress.dashboard.panels import metric_panels
from buttress.dashboard.refresh import InsightCharts
from buttress.dashboard.routes import ASSETS, static_file
from buttress.demo.service import svc as demo
from buttress.http.app import create_app
from buttress.observability.alert_values import Snapshot
from buttress.observability.alerts import alert_state_file
from buttress.observability.insights import QueryResult, saved_query
from tests.support import FakeClock
from tests.test_events_server import demo_order

TOKEN = "dashboard-token"
PANELS = ("requests", "latency", "fallbacks", "models", "violations", "batches", "guardrails",
          "caches", "alerts", "insights")


def labelled(**labels: str) -> dict[str, str]:
    return {"service": "svc", **labels}


def snapshot(requests: float, hits: float, renamed: float, rows: float,
             slow: float) -> Snapshot:
    """Requests (all 200, ``slow`` of them over 100 ms), cache hits (one miss each ten),
    renamed keys, batched rows (batches of 4), the guardrails' gauges."""
    fast = requests - slow
    latency = [(labelled(le=le), count) for le, count in
               (("0.01", fast), ("0.1", fast), ("0.25", requests), ("+Inf", requests))]
    return {
        "buttress_requests_total": [(labelled(status="200"), requests)],
        "buttress_request_duration_seconds_bucket": latency,
        "buttress_in_flight_requests": [(labelled(), 3.0)],
        "buttress_fallbacks_total": [
            (labelled(stage="user_features", category="features_missing"), requests / 10),
            (labelled(stage="product_features", category="features_missing"), requests / 10),
            (labelled(stage="discount_model", category="model_error"), 1.0)],
        "buttress_input_contract_violations_total": [
            (labelled(field="sub_orders[].seller_margin", kind="renamed"), renamed),
            (labelled(field="<unknown>", kind="unknown_key"), 7.0)],
        "buttress_cache_lookups_total": [(labelled(cache="user_features", result="hit"), hits),
                                         (labelled(cache="user_features", result="miss"),
                                          hits / 9)],
        "buttress_batch_size_rows_bucket": [(labelled(model="m", le="2"), 0.0),
                                            (labelled(model="m", le="4"), rows / 4),
                                            (labelled(model="m", le="+Inf"), rows / 4)],
        "buttress_batch_size_rows_sum": [(labelled(model="m"), rows)],
        "buttress_batch_size_rows_count": [(labelled(model="m"), rows / 4)],
        "buttress_guardrail_budget_used": [(labelled(guardrail="per_user", key="42"), 30.0),
                                           (labelled(guardrail="per_user", key="7"), 90.0)],
        "buttress_guardrail_budget_remaining": [
            (labelled(guardrail="per_user", key="42"), 70.0),
            (labelled(guardrail="per_user", key="7"), 10.0)],
        "buttress_guardrail_trips_total": [(labelled(guardrail="per_user"), 4.0)],
        "buttress_breaker_open": [(labelled(stage="discount_model"), 1.0)],
    }


def test_panels_take_rates_and_quantiles_between_two_snapshots() -> None:
    old = snapshot(requests=100, hits=90, renamed=10, rows=400, slow=0)
    new = snapshot(requests=300, hits=180, renamed=50, rows=800, slow=20)
    panels = metric_panels(new, old, 2.0)

    assert panels["requests"] == {"per_s": 100.0, "total": 300.0, "in_flight": 3.0,
                                  "by_status": {"200": 100.0}}
    assert panels["latency_ms"]["p50"] == pytest.approx(10 * 100 / 180)  # interpolated
    assert 100 < panels["latency_ms"]["p99"] <= 250  # the 20 slow ones of 200
    fallbacks = {c["category"]: c for c in panels["fallbacks"]["by_category"]}
    assert fallbacks["features_missing"]["per_s"] == pytest.approx(20.0)  # both stages
    assert fallbacks["features_missing"]["per_request"] == pytest.approx(0.2)
    assert fallbacks["model_error"] == {"category": "model_error", "per_s": 0.0,
                                        "per_request": 0.0, "total": 1.0}
    assert panels["violations"][0] == {"field": "sub_orders[].seller_margin",
                                       "kind": "renamed", "per_s": 20.0, "total": 50.0}
    [cache] = panels["caches"]
    assert cache["hit_ratio"] == pytest.approx(0.9)
    assert cache["lookups_per_s"] == pytest.approx(50.0)
    [batches] = panels["batches"]
    assert batches["mean_rows"] == 4.0
    assert batches["batches_per_s"] == 50.0
    [guardrail] = panels["guardrails"]
    assert guardrail == {"guardrail": "per_user", "key": "7", "used": 90.0, "limit": 100.0,
                         "share": 0.9, "trips_per_s": 0.0, "trips_total": 4.0}
    assert panels["breakers"] == {"discount_model": True}


def test_a_first_snapshot_has_totals_and_no_rates() -> None:
    panels = metric_panels(snapshot(requests=10, hits=9, renamed=1, rows=8, slow=0), None, None)
    assert panels["requests"]["total"] == 10
    assert panels["requests"]["per_s"] is None
    assert panels["latency_ms"] == {"p50": None, "p99": None}
    assert panels["violations"][0]["per_s"] is None
    assert panels["caches"][0]["hit_ratio_total"] == pytest.approx(0.9)


def test_a_worker_restart_never_makes_a_negative_rate() -> None:
    old = snapshot(requests=500, hits=90, renamed=10, rows=400, slow=0)
    new = snapshot(requests=20, hits=9, renamed=1, rows=40, slow=0)
    assert metric_panels(new, old, 1.0)["requests"]["per_s"] == 0.0


def test_a_query_starting_with_a_time_is_drawn_as_lines() -> None:
    minute = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    result = QueryResult(["minute", "model_version", "mean_discount_pct", "predictions"], [
        (minute, "v1", decimal.Decimal("10.5"), 3),
        (minute, "v2", 15.25, 2),
        (minute + dt.timedelta(minutes=1), "v1", 10.0, 4)])
    drawn = chart("mean_discount_by_model_version", result)
    assert drawn["kind"] == "lines"
    assert drawn["y"] == "mean_discount_pct"
    at = minute.timestamp()
    assert drawn["series"] == [{"name": "v1", "points": [(at, 10.5), (at + 60, 10.0)]},
                               {"name": "v2", "points": [(at, 15.25)]}]

    table = chart("p99", QueryResult(["stage", "p99_ms"], [("model", float("nan"))]))
    assert table == {"name": "p99", "kind": "table", "columns": ["stage", "p99_ms"],
                     "rows": [("model", None)], "more_rows": 0}


def test_the_docs_configuration_example_loads(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "dashboard.md").read_text()
    [block] = re.findall(r"```toml\n(.*?)```", doc, flags=re.DOTALL)
    (tmp_path / "buttress.toml").write_text(block)
    settings = bt.load_settings(tmp_path / "buttress.toml")
    assert chart_names(settings.dashboard_queries, settings.insights.queries) == [
        "mean_discount_by_model_version", "errors_by_app_version"]


def test_which_queries_are_drawn() -> None:
    assert chart_names(None, {}) == list(charts.DEFAULT_CHARTS)
    assert chart_names(None, {"mine": "SELECT 1"}) == ["mine", *charts.DEFAULT_CHARTS]
    assert chart_names([], {"mine": "SELECT 1"}) == []
    with pytest.raises(ConfigError, match="dashboard_queries"):
        bt.load_settings(dashboard_queries=["no_such_query"])


async def test_insight_queries_run_once_for_any_number_of_polls_and_back_off_when_slow(
        tmp_path: Path) -> None:
    runs: list[float] = []
    took = {"seconds": 0.01}

    async def run(now: float) -> list[dict[str, Any]]:
        runs.append(now)
        elapsed.advance(took["seconds"])
        return [{"name": "q", "kind": "table", "columns": ["n"], "rows": [[1]]}]

    clock, elapsed = FakeClock(1000.0), FakeClock(0.0)
    board = InsightCharts(tmp_path, {"q": "SELECT 1"}, run=run, clock=clock, timer=elapsed)
    assert board.current()["charts"] == [{"name": "q", "kind": "pending"}]
    for _ in range(5):  # many pages polling while it runs: one run
        board.current()
        await asyncio.sleep(0.01)
    assert runs == [1000.0]
    assert board.current()["charts"][0]["kind"] == "table"

    def polls_until_due(seconds: float) -> None:
        elapsed.advance(seconds)
        board.current()

    polls_until_due(refresh.REFRESH - 0.1)
    await asyncio.sleep(0.01)
    assert len(runs) == 1, "cached for REFRESH seconds"
    took["seconds"] = 2.0  # a slow run: the next one waits 2 / COST_SHARE seconds
    polls_until_due(0.2)
    await asyncio.sleep(0.01)
    assert len(runs) == 2
    polls_until_due(refresh.REFRESH + 1)
    await asyncio.sleep(0.01)
    assert len(runs) == 2
    polls_until_due(2.0 / refresh.COST_SHARE)
    await asyncio.sleep(0.01)
    assert len(runs) == 3
    await board.aclose()


async def test_the_queries_run_in_a_process_of_their_own_at_the_lowest_priority(
        tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    now = time.time()
    (events / "events-1-1-0.jsonl").write_bytes(b"".join(orjson.dumps(
        {"v": 1, "kind": "request", "ts": now - i, "status": 200, "route": "/predict",
         "latency_ms": 1.0 + i, "model_version": "v1", "stage_ms": {"model": 0.5},
         "prediction": {"mean_discount_pct": 10.0 + i}}) + b"\n" for i in range(5)))
    queries = {name: saved_query(name, {}) for name in charts.DEFAULT_CHARTS}
    board = InsightCharts(events, {**queries, "broken": "SELECT nope FROM events"})
    board.current()
    deadline = time.monotonic() + 30
    while board.ran_at is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    worker = board._worker
    assert worker is not None
    assert os.getpriority(os.PRIO_PROCESS, worker.pid) == 19
    drawn = {c["name"]: c for c in board.current()["charts"]}
    assert drawn["mean_discount_by_model_version"]["series"][0]["name"] == "v1"
    assert drawn["p99_latency_by_stage"]["kind"] == "table"
    assert drawn["broken"]["kind"] == "none"
    assert "nope" in drawn["broken"]["error"]
    await board.aclose()
    assert worker.returncode is not None, "stopped with the dashboard"


# -- the routes, on the demo in process ------------------------------------------------------


@asynccontextmanager
async def demo_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The demo's whole app (lifespan included), its registry and files in ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    values: dict[str, Any] = {"events_dir": str(tmp_path / "events"), "admin_token": TOKEN,
                              "max_concurrency": "off", **settings}
    app = create_app(demo.build(bt.Settings(**values)))
    async with app.routes.router.lifespan_context(app.routes), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://buttress") as client:
        yield client


async def data(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/dashboard/data")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    document: dict[str, Any] = orjson.loads(response.content)
    return document


async def test_the_page_and_its_files_come_from_the_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with demo_app(tmp_path, monkeypatch) as client:
        page = await client.get("/dashboard")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert page.headers["x-frame-options"] == "DENY"
        for name in PANELS:
            assert f'data-panel="{name}"' in page.text
        for name, media_type in ASSETS.items():
            asset = await client.get(f"/dashboard/static/{name}")
            assert asset.status_code == 200
            assert asset.headers["content-type"] == media_type
            assert asset.content == static_file(name)
        for wrong in ("index.htm", "..%2Fdata.py", "data.py"):
            assert (await client.get(f"/dashboard/static/{wrong}")).status_code == 404
    # nothing the page loads comes from elsewhere (the SVG namespace is a name, not a fetch)
    for name in ("index.html", *ASSETS):
        text = static_file(name).decode()
        assert re.findall(r"(?:https?:)?//[\w.-]+", text.replace("http://www.w3.org", "")) == []


async def test_the_data_after_demo_requests(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    async with demo_app(tmp_path, monkeypatch) as client:
        first = await data(client)
        assert first["requests"]["per_s"] is None  # one snapshot: totals only
        for i in range(20):
            order = demo_order(f"o-{i}", renamed=i % 4 == 0)
            assert (await client.post("/predict", json=order)).status_code == 200
        await asyncio.sleep(REUSE)
        board = await data(client)

    assert board["service"] == "discount"
    assert board["workers"] == 1
    assert board["requests"]["total"] == 20
    assert board["requests"]["per_s"] > 0
    assert board["latency_ms"]["p99"] > 0
    renamed = [v for v in board["violations"] if v["field"] == "sub_orders[].seller_margin"]
    assert renamed == [{"field": "sub_orders[].seller_margin", "kind": "renamed",
                        "per_s": pytest.approx(5 / board["window_s"]), "total": 5.0}]
    [cache] = board["caches"]
    assert cache["cache"] == "user_features"
    assert cache["hit_ratio"] > 0.9  # one user: one miss at most (warm-up saw it first)
    [batches] = board["batches"]
    assert batches["model"] == "discount_model"
    assert batches["mean_rows"] >= 1
    guardrails = {g["guardrail"]: g for g in board["guardrails"]}
    assert guardrails["discount_value_per_minute"]["limit"] == 1_500_000
    [model] = board["models"]["models"]
    assert model["name"] == "discount"
    assert model["stable"] == "v1"
    assert model["versions"] == ["v1", "v2"]
    assert model["rollback_to"] is None
    assert [r["version"] for r in model["replicas"]] == ["v1"]
    assert board["alerts"] == {"evaluated_at": None, "stale": False, "firing": 0, "rules": []}
    assert [c["name"] for c in board["insights"]["charts"]] == list(charts.DEFAULT_CHARTS)


async def test_insight_charts_show_the_events(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    async with demo_app(tmp_path, monkeypatch) as client:
        for i in range(10):
            assert (await client.post("/predict", json=demo_order(f"o-{i}"))).status_code == 200
        deadline = time.monotonic() + 15
        while True:
            board = await data(client)
            found = {c["name"]: c for c in board["insights"]["charts"]}
            mean = found["mean_discount_by_model_version"]
            if mean["kind"] == "lines" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)  # the events are written every 200 ms, queries run now
                                      # and then: a later poll has them
    assert mean["kind"] == "lines", mean
    [series] = mean["series"]
    assert series["name"] == "v1"
    assert 0 < series["points"][0][1] < 30
    stages = found["p99_latency_by_stage"]
    assert stages["kind"] == "table"
    assert {"(request)", "discount_model"} <= {row[0] for row in stages["rows"]}


async def test_alerts_come_from_the_evaluators_state_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rule = {"name": "slow", "metric": "buttress_request_duration_seconds",
            "function": "quantile", "quantile": 0.99, "threshold": 0.2, "severity": "page"}
    quiet = {"name": "quiet", "metric": "buttress_in_flight_requests", "threshold": 100}
    async with demo_app(tmp_path, monkeypatch, alerts=[rule, quiet],
                        alerts_interval=3600) as client:
        state = {"service": "discount", "pid": 1, "written_at": time.time(), "alerts": {
            "slow": {"state": "firing", "value": 0.31, "active_since": time.time() - 60,
                     "evaluated_at": time.time(), "severity": "page", "error": None}}}
        path = alert_state_file(tmp_path / "events", "discount")
        waited = time.monotonic()
        while not path.exists():  # this process's first round (then none for an hour)
            assert time.monotonic() - waited < 10
            await asyncio.sleep(0.01)
        # as if another worker evaluated: the dashboard reads what it wrote
        path.write_bytes(orjson.dumps(state))
        board = await data(client)
    alerts = board["alerts"]
    assert alerts["firing"] == 1
    assert alerts["stale"] is False
    assert [(r["name"], r["state"], r["value"]) for r in alerts["rules"]] == [
        ("slow", "firing", 0.31), ("quiet", "unknown", None)]
    assert alerts["rules"][0]["condition"] == "> 0.2"


async def test_without_the_token_a_rollback_is_refused_and_nothing_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with demo_app(tmp_path, monkeypatch) as client:
        admin = {"Authorization": f"Bearer {TOKEN}"}
        promoted = await client.post("/admin/models/discount/promote", headers=admin,
                                     json={"version": "v2"})
        assert promoted.status_code == 200
        before = (await data(client))["models"]
        assert before["models"][0]["stable"] == "v2"
        assert before["models"][0]["rollback_to"] == "v1"
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refused = await client.post("/admin/models/discount/rollback", headers=headers)
            assert refused.status_code == 401
        await asyncio.sleep(REUSE)
        after = (await data(client))["models"]["models"][0]
        assert (after["stable"], after["rollback_to"]) == ("v2", "v1")


async def test_the_dashboard_can_be_turned_off(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    async with demo_app(tmp_path, monkeypatch, dashboard=False) as client:
        for path in ("/dashboard", "/dashboard/data", "/dashboard/static/dashboard.js"):
            assert (await client.get(path)).status_code == 404
