"""The built-in insight queries over the events a real demo server wrote."""

from __future__ import annotations

import asyncio
import collections
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.servers import REPO, clean_environment, cli_command, running_server
from tests.test_events_server import LOGGED_DEMO, drive, mixed_requests

pytestmark = pytest.mark.slow


def insights(workdir: Path, *args: str) -> Any:
    done = subprocess.run(
        cli_command("insights", *args, "--events", str(workdir / "events"), "--json"),
        cwd=REPO, env=clean_environment(workdir), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return orjson.loads(done.stdout)


def test_builtin_queries_over_a_real_servers_events(tmp_path: Path) -> None:
    requests = mixed_requests(100)  # 20 of each kind
    with running_server(LOGGED_DEMO, tmp_path) as server:
        statuses = asyncio.run(drive(server.base_url, requests))
        assert server.stop() == 0, server.output()
    assert sorted(statuses.values()).count(422) == 20

    fallbacks = insights(tmp_path, "--saved", "fallbacks_by_category", "--since", "15m")
    by_category: dict[str, int] = {}
    for row in fallbacks:
        by_category[row["category"]] = by_category.get(row["category"], 0) + row["fallbacks"]
    expected = collections.Counter(c for e in server.events() for c in e["fallbacks"])
    assert by_category == dict(expected)
    assert by_category["model_error"] >= 5  # the fail-model-* orders (then the breaker opens)
    assert all(row["minute"].endswith(":00+00:00") for row in fallbacks)

    violations = insights(tmp_path, "--saved", "contract_violations_by_field")
    counts = {(r["field"], r["kind"]): r["violations"] for r in violations}
    assert counts[("sub_orders[0].seller_margin", "renamed")] == 20
    assert counts[("order_id", "missing")] == 20

    discounts = insights(tmp_path, "--saved", "mean_discount_by_model_version")
    assert {row["model_version"] for row in discounts} == {"v1"}
    assert sum(row["predictions"] for row in discounts) == 80
    assert all(0 <= row["mean_discount_pct"] <= 30 for row in discounts)

    stages = {row["stage"]: row for row in insights(tmp_path, "--saved",
                                                    "p99_latency_by_stage")}
    # user 42's features come from the demo's user_features cache (the warm-up's example
    # order filled it), so that stage never ran: only stages that ran have a time
    assert {"(request)", "product_features", "discount_model"} <= set(stages)
    assert stages["(request)"]["calls"] == 100
    assert stages["discount_model"]["p99_ms"] >= stages["discount_model"]["p50_ms"]

    by_version = insights(tmp_path, "SELECT prediction.app_version AS app, count(*) AS n "
                          "FROM events WHERE status = 200 GROUP BY ALL ORDER BY app")
    assert by_version == [{"app": "5.11.0", "n": 20}, {"app": "5.12.0", "n": 60}]
