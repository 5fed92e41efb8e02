"""``/dashboard/data`` of a real demo server with ``--workers 2``: the numbers are the whole
server's (every request counted once, whichever worker served it or answers the poll), both
replicas show their model version, the saved queries are charts, the alert evaluated by one
worker shows on every worker, and the admin API refuses a rollback without the token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.servers import DEMO, RunningServer, running_server
from tests.test_events_server import demo_order, drive

pytestmark = pytest.mark.slow

TOKEN = "dashboard-server-token"
CONFIG = """
alerts_interval = "0.5s"

[[alerts]]
name = "renamed_keys"
metric = "buttress_input_contract_violations_total"
match = { kind = "renamed" }
threshold = 10
summary = "renamed keys since the start"

[insights.queries]
requests_by_status = '''
  SELECT time_bucket(INTERVAL 1 minute, time) AS minute, CAST(status AS VARCHAR) AS status,
         count(*) AS requests
  FROM events WHERE kind = 'request' GROUP BY ALL ORDER BY minute'''
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir: Path = tmp_path_factory.mktemp("dashboard-workers")
    (workdir / "buttress.toml").write_text(CONFIG)
    with running_server(DEMO, workdir, env={"BUTTRESS_ADMIN_TOKEN": TOKEN},
                        args=["--workers", "2"]) as running:
        yield running


def board(http: httpx.Client) -> dict[str, Any]:
    response = http.get("/dashboard/data")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def until(http: httpx.Client, check: Callable[[dict[str, Any]], bool],
          within: float = 20.0) -> dict[str, Any]:
    """Poll the data (on a new connection each time: any worker may answer) until ``check``."""
    deadline = time.monotonic() + within
    while True:
        with httpx.Client(base_url=str(http.base_url), timeout=10) as fresh:
            document = board(fresh)
        if check(document) or time.monotonic() > deadline:
            return document
        time.sleep(0.25)


def test_the_numbers_are_the_whole_servers(server: RunningServer) -> None:
    requests = [(f"r-{i}", orjson.dumps(demo_order(f"o-{i}", renamed=i % 5 == 0)))
                for i in range(200)]
    statuses = asyncio.run(drive(server.base_url, requests, concurrency=16))
    assert set(statuses.values()) == {200}
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        document = until(http, lambda d: d["requests"]["total"] >= 200)
        assert document["requests"]["total"] == 200, "every request once, not one worker's"
        time.sleep(1.5)  # a late flush from either worker would show now
        document = until(http, lambda d: False, within=0)
        assert document["requests"]["total"] == 200
        assert document["workers"] == 2
        renamed = {(v["field"], v["kind"]): v["total"] for v in document["violations"]}
        assert renamed[("sub_orders[].seller_margin", "renamed")] == 40

        pids = {until(http, lambda d: False, within=0)["pid"] for _ in range(20)}
        assert len(pids) == 2, "both workers answered polls"

        [model] = until(http, lambda d: len(d["models"]["models"][0]["replicas"]) == 2,
                        within=30)["models"]["models"]
        assert [r["version"] for r in model["replicas"]] == ["v1", "v1"]
        assert {r["replica"].rpartition(":")[2] for r in model["replicas"]} == {
            str(pid) for pid in pids}


def test_the_saved_queries_and_the_alert_show_on_every_worker(server: RunningServer) -> None:
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        for i in range(15):
            assert http.post("/predict", json=demo_order(f"a-{i}", renamed=True)).status_code == 200
        document = until(http, lambda d: d["alerts"]["firing"] == 1
                         and _chart(d, "requests_by_status")["kind"] == "lines")
    [alert] = document["alerts"]["rules"]
    assert (alert["name"], alert["state"]) == ("renamed_keys", "firing")
    assert alert["value"] >= 15
    charts = {c["name"]: c for c in document["insights"]["charts"]}
    assert list(charts) == ["requests_by_status", "mean_discount_by_model_version",
                            "p99_latency_by_stage"]
    assert charts["requests_by_status"]["series"][0]["name"] == "200"
    assert charts["mean_discount_by_model_version"]["series"][0]["name"] == "v1"


def test_a_rollback_without_the_token_is_refused_and_changes_nothing(
        server: RunningServer) -> None:
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        before = board(http)["models"]["models"][0]
        for headers in ({}, {"Authorization": "Bearer not-the-token"}):
            for action, body in (("rollback", {}), ("promote", {"version": "v2"})):
                response = http.post(f"/admin/models/discount/{action}", json=body,
                                     headers=headers)
                assert response.status_code == 401
        time.sleep(0.6)
        after = board(http)["models"]["models"][0]
        assert (after["stable"], after["aliases"]) == (before["stable"], before["aliases"])
        assert http.post("/predict", json=demo_order("after")).headers["x-model-version"] == "v1"


def _chart(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in document["insights"]["charts"] if c["name"] == name)
