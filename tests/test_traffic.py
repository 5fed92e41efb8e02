"""The demo traffic: the mix, the tally, the display, and a short run against a server."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console

from buttress.demo.traffic.display import LiveView, line, render, run_traffic, sparkline, summary
from buttress.demo.traffic.driver import TrafficError, drive
from buttress.demo.traffic.mix import (
    Episodes,
    Kind,
    Mix,
    PlannedRequest,
    TrafficGenerator,
    demo_orders,
)
from buttress.demo.traffic.stats import Outcome, TrafficStats
from tests.servers import DEMO, running_server
from tests.support import free_port

ORDER_KEYS = {"order_id", "user", "sub_orders"}
USER_KEYS = {"id", "app_version"}
SUB_KEYS = {"sub_order_id", "product_id", "price", "margin", "quantity"}


def known_orders() -> list[dict[str, Any]]:
    """Demo orders whose users and products all exist, so an unknown id can only be injected."""
    return [o for o in demo_orders(seed=11, n=400)
            if o["user"]["id"] <= 5000 and all(s["product_id"] <= 2000 for s in o["sub_orders"])]


def classify(planned: PlannedRequest) -> Kind:
    """What kind of request the body is, read from the bytes alone."""
    try:
        order = json.loads(planned.body)
    except json.JSONDecodeError:
        return Kind.MALFORMED_JSON
    if not order.keys() >= ORDER_KEYS or "id" not in order["user"] or any(
            not {"product_id", "price"} <= sub.keys() for sub in order["sub_orders"]):
        return Kind.MISSING_FIELD
    subs, user = order["sub_orders"], order["user"]
    if any("seller_margin" in sub for sub in subs):
        return Kind.RENAMED_KEY
    if (any(sub.get("quantity") == "two" or sub.get("margin") == "high" for sub in subs)
            or not isinstance(user.get("app_version", ""), str)):
        return Kind.WRONG_TYPE
    if order.keys() - ORDER_KEYS or user.keys() - USER_KEYS or any(
            sub.keys() - SUB_KEYS for sub in subs):
        return Kind.UNKNOWN_KEY
    if user["id"] > 5000 or any(sub["product_id"] > 2000 for sub in subs):
        return Kind.UNKNOWN_IDS
    return Kind.VALID


TIMES = [i / 100 for i in range(3000)]  # 30 s at 100 req/s: a burst window and a model outage


def plan(seed: int, orders: list[dict[str, Any]]) -> list[PlannedRequest]:
    generator = TrafficGenerator(orders, seed=seed)
    return [generator.next(t) for t in TIMES]


def test_the_mix_is_deterministic_for_a_seed() -> None:
    orders = known_orders()
    assert plan(5, orders) == plan(5, orders)
    assert plan(5, orders) != plan(6, orders)


def test_the_mix_contains_every_kind_and_the_body_matches_its_kind() -> None:
    planned = plan(5, known_orders())
    kinds = Counter(classify(p) for p in planned)
    assert [classify(p) for p in planned] == [p.kind for p in planned]
    assert set(kinds) == set(Kind)
    assert 0.75 < kinds[Kind.VALID] / len(planned) < 0.85  # the default weight is 0.80
    tight = [p for p in planned if p.tight_deadline]
    assert 5 <= len(tight) <= 60  # 1% of 3000
    assert all(p.headers == {"x-deadline-ms": "1"} for p in tight)


def test_a_model_outage_renames_every_order_inside_its_window_only() -> None:
    episodes = Episodes()
    for t, p in zip(TIMES, plan(5, known_orders()), strict=True):
        assert p.model_failure == episodes.in_outage(t)
        if p.kind not in (Kind.MALFORMED_JSON, Kind.MISSING_FIELD):
            assert json.loads(p.body)["order_id"].startswith("fail-model") == p.model_failure
    assert any(p.model_failure for p in plan(5, known_orders()))


def test_episode_windows() -> None:
    e = Episodes()  # bursts at 10 s, 30 s, ... for 3 s; outages at 25 s, 70 s, ... for 2 s
    assert [e.in_burst(t) for t in (9.9, 10.0, 12.9, 13.0, 30.5)] == [False, True, True, False,
                                                                      True]
    assert e.rate_factor(11.0) == 5.0
    assert e.rate_factor(14.0) == 1.0
    assert [e.in_outage(t) for t in (24.9, 25.0, 26.9, 27.0, 70.5)] == [False, True, True, False,
                                                                       True]
    off = Episodes(burst_for=0, outage_for=0)
    assert not any(off.in_burst(t) or off.in_outage(t) for t in TIMES)


@pytest.mark.parametrize("make", [
    lambda: Mix(valid=-1.0),
    lambda: Mix(**{k: 0.0 for k in Mix.__dataclass_fields__}),
    lambda: Mix(valid=float("nan")),
    lambda: Episodes(burst_for=30.0),
    lambda: Episodes(outage_every=0.0),
    lambda: Episodes(burst_factor=0.5),
    lambda: Episodes(tight_deadline_share=2.0),
])
def test_policies_are_validated(make: Any) -> None:
    with pytest.raises(ValueError):
        make()


def test_a_generator_needs_orders() -> None:
    with pytest.raises(ValueError):
        TrafficGenerator([], seed=1)


def test_the_tally_counts_per_second_and_keeps_only_recent_latencies() -> None:
    stats = TrafficStats("http://x")
    for second in range(20):
        for i in range(10):  # 10 answers a second, the first 5 seconds slow
            latency = 0.5 if second < 5 else 0.001 * (i + 1)
            fallbacks = ("features_missing",) if i == 0 else ()
            stats.record(Outcome(200, latency, fallbacks=fallbacks, model_version="v1"),
                         second + i / 10)
        stats.record(Outcome(None, 5.0, error="ConnectError"), second + 0.95)
    report = stats.report(20.0, in_flight=2)
    assert report.statuses == {200: 200}
    assert report.errors == {"ConnectError": 20}
    assert report.completed == 220
    assert report.per_second == (11,) * 20
    assert report.fallbacks == {"features_missing": 20}
    assert report.fallback_rates == {"features_missing": 1.0}
    assert report.model_versions == {"v1": 200}
    assert report.latency.max == pytest.approx(0.010)  # the slow seconds left the window
    assert report.latency.p50 == pytest.approx(0.005)
    assert report.run_latency.max == 0.5
    assert report.run_latency.p99 == pytest.approx(0.5, rel=0.02)
    assert report.run_latency.p50 == pytest.approx(0.007, rel=0.02)
    long_after = stats.report(500.0)
    assert long_after.per_second == (0,) * 30
    assert long_after.latency.max == 0.0


def test_the_display_shows_statuses_fallbacks_and_a_sparkline() -> None:
    stats = TrafficStats("http://127.0.0.1:1")
    for i in range(300):
        status = 422 if i % 50 == 0 else 200
        stats.record(Outcome(status, 0.002, fallbacks=("input_contract",) if i % 7 == 0 else ()),
                     i / 100)
    stats.record_sent("valid")
    report = stats.report(3.2, outage=True)
    out = Console(file=io.StringIO(), width=140)
    out.print(render(report))
    out.print(summary(report))
    text = out.file.getvalue()  # type: ignore[attr-defined]
    for expected in ("http://127.0.0.1:1", "422", "input_contract", "MODEL OUTAGE", "p99",
                     "traffic summary", sparkline(report.per_second)):
        assert expected in text
    assert "422:6" in line(report)

    terminal = Console(file=io.StringIO(), width=140, force_terminal=True)
    view = LiveView(terminal)
    with view.shown():
        view.update(report)
    assert "MODEL OUTAGE" in terminal.file.getvalue()  # type: ignore[attr-defined]


def test_sparkline() -> None:
    assert sparkline([]) == ""
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([0, 50, 100]) == "▁▅█"


async def test_drive_rejects_bad_settings_and_a_server_that_never_gets_ready() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrafficError):
        await drive(url, rate=0, orders=known_orders()[:5])
    with pytest.raises(TrafficError, match="not ready"):
        await drive(url, duration=1, ready_timeout=0.2, orders=known_orders()[:5])


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(DEMO, tmp_path_factory.mktemp("demo")) as server:
        yield server.base_url


@pytest.mark.slow
def test_a_short_run_against_the_demo_server(demo_server: str) -> None:
    out = Console(file=io.StringIO(), width=140)
    # A half-second model outage inside the run: model_error, then the breaker opens.
    episodes = Episodes(burst_for=0, outage_start=1.0, outage_for=0.5)
    report = run_traffic(demo_server, duration=3, rate=100, concurrency=32, seed=5,
                         display=False, episodes=episodes, console=out)
    assert report.errors == {}
    assert report.statuses[200] > 100
    assert report.statuses.get(422, 0) >= 1
    assert report.statuses.get(400, 0) >= 1
    assert set(report.statuses) <= {200, 400, 422}
    for category in ("input_contract", "features_missing", "model_error", "model_unavailable"):
        assert report.fallbacks.get(category, 0) >= 1, (category, report.fallbacks)
    assert report.model_versions.keys() == {"v1"}
    assert report.run_latency.p50 > 0
    assert "traffic summary" in out.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.slow
async def test_stop_ends_an_unbounded_run(demo_server: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(1.0, stop.set)
    began = time.monotonic()
    report = await drive(demo_server, duration=None, rate=50, seed=2, stop=stop)
    assert 0.9 < time.monotonic() - began < 8
    assert report.completed == report.total_sent > 20
    assert report.in_flight == 0
