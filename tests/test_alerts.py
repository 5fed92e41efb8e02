"""Alert rules: their values (rates, ratios, quantiles, queries), states, actions, the lock."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError

from buttress.config import ConfigError, load_settings
from buttress.observability.alert_rules import AlertRule, promql
from buttress.observability.alert_values import histogram_quantile
from buttress.observability.alerts import AlertEvaluator, AlertNotice, EvaluatorLock
from buttress.observability.events import JsonlSink
from tests.support import FakeClock


def rule(**fields: Any) -> AlertRule:
    return AlertRule.model_validate({"name": "r", "threshold": 1.0, **fields})


class Registry:
    """A registry the evaluator reads as if it were a service's."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("buttress_requests_total", "", ["service", "status"], registry=r)
        self.fallbacks = Counter("buttress_fallbacks_total", "", ["service", "category"],
                                 registry=r)
        self.in_flight = Gauge("buttress_in_flight_requests", "", ["service"], registry=r)
        self.latency = Histogram("buttress_request_duration_seconds", "", ["service"],
                                 buckets=(0.01, 0.1, 1.0), registry=r)

    async def collect(self) -> list[Any]:
        return list(self.registry.collect())


def evaluator(rules: list[AlertRule], source: Registry, clock: FakeClock, tmp_path: Path,
              **kwargs: Any) -> tuple[AlertEvaluator, list[dict[str, Any]], dict[str, bool]]:
    events: list[dict[str, Any]] = []
    firing: dict[str, bool] = {}
    evaluation = AlertEvaluator(
        rules, service="svc", events_dir=tmp_path / "events", collect=source.collect,
        emit=events.append, set_firing=firing.__setitem__, clock=clock,
        state_file=tmp_path / "events" / "alerts-state-svc.json", **kwargs)
    return evaluation, events, firing


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.1, 50.0), (0.2, 90.0), (0.4, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.38)
    assert histogram_quantile(0.99, [(0.1, 1.0), (float("inf"), 10.0)]) == 0.1
    assert histogram_quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None


def test_rules_are_validated_with_the_key_named() -> None:
    with pytest.raises(ValidationError, match="exactly one of metric, query, saved"):
        rule(metric="m", query="SELECT 1")
    with pytest.raises(ValidationError, match="ratio needs over"):
        rule(metric="m", function="ratio")
    with pytest.raises(ValidationError, match="webhook action needs"):
        rule(metric="m", actions=["webhook"])
    assert rule(metric="m", **{"for": "2m"}).for_ == 120.0


def test_alert_rules_come_from_buttress_toml(tmp_path: Path) -> None:
    config = tmp_path / "buttress.toml"
    config.write_text('alerts_interval = "5s"\n[[alerts]]\nname = "slow"\n'
                      'metric = "buttress_request_duration_seconds"\nfunction = "quantile"\n'
                      'quantile = 0.99\nwindow = "5m"\nthreshold = 0.2\nfor = "1m"\n'
                      'labels = { team = "ml" }\n')
    settings = load_settings(config)
    (slow,) = settings.alerts
    assert (settings.alerts_interval, slow.for_, slow.labels) == (5.0, 60.0, {"team": "ml"})
    config.write_text('[[alerts]]\nname = "a"\nmetric = "m"\nthreshold = 1\n'
                      '[[alerts]]\nname = "a"\nmetric = "m"\nthreshold = 2\n')
    with pytest.raises(ConfigError, match="unique"):
        load_settings(config)


def test_promql_of_each_function() -> None:
    assert promql(rule(metric="buttress_in_flight_requests")) == (
        "sum(buttress_in_flight_requests)")
    assert promql(rule(metric="buttress_fallbacks_total", function="ratio",
                       match={"category": "model_error"}, over="buttress_requests_total",
                       window="5m")) == (
        'sum(rate(buttress_fallbacks_total{category="model_error"}[300s])) / '
        'sum(rate(buttress_requests_total[300s]))')
    assert promql(rule(metric="buttress_request_duration_seconds", function="quantile",
                       quantile=0.99, window="1m")) == (
        "histogram_quantile(0.99, sum by (le) "
        "(rate(buttress_request_duration_seconds_bucket[60s])))")


async def test_a_ratio_rule_goes_pending_fires_after_for_and_resolves(tmp_path: Path) -> None:
    source, clock = Registry(), FakeClock(1_000_000.0)
    ratio = rule(name="fallback_ratio", metric="buttress_fallbacks_total", function="ratio",
                 over="buttress_requests_total", window="60s", op=">", threshold=0.2,
                 **{"for": "20s"})
    evaluation, events, firing = evaluator([ratio], source, clock, tmp_path)
    assert firing == {"fallback_ratio": False}

    async def step(requests: int, fallbacks: int) -> str:
        source.requests.labels("svc", "200").inc(requests)
        source.fallbacks.labels("svc", "model_error").inc(fallbacks)
        clock.advance(10)
        await evaluation.evaluate()
        return evaluation.statuses["fallback_ratio"].state

    assert await step(100, 0) == "inactive"  # one snapshot: no rate yet
    assert await step(100, 5) == "inactive"
    assert await step(100, 50) == "pending"
    assert await step(100, 50) == "pending"
    assert await step(100, 50) == "firing"
    # the rate runs from the first snapshot (the oldest in the window)
    assert evaluation.statuses["fallback_ratio"].value == pytest.approx(155 / 400)
    assert firing == {"fallback_ratio": True}
    for _ in range(7):
        state = await step(100, 0)
    assert state == "inactive"
    assert firing == {"fallback_ratio": False}
    assert [(e["kind"], e["alert"], e["state"]) for e in events] == [
        ("alert", "fallback_ratio", "firing"), ("alert", "fallback_ratio", "resolved")]
    saved = orjson.loads((tmp_path / "events" / "alerts-state-svc.json").read_bytes())
    assert saved["alerts"]["fallback_ratio"]["state"] == "inactive"


async def test_value_and_quantile_rules(tmp_path: Path) -> None:
    source, clock = Registry(), FakeClock(1_000_000.0)
    busy = rule(name="busy", metric="buttress_in_flight_requests", threshold=3)
    slow = rule(name="slow", metric="buttress_request_duration_seconds", function="quantile",
                quantile=0.9, window="60s", threshold=0.5)
    evaluation, _events, firing = evaluator([busy, slow], source, clock, tmp_path)
    await evaluation.evaluate()
    source.in_flight.labels("svc").set(5)
    for _ in range(10):
        source.latency.labels("svc").observe(0.005)
    for _ in range(10):
        source.latency.labels("svc").observe(0.9)
    clock.advance(5)
    await evaluation.evaluate()
    assert firing == {"busy": True, "slow": True}
    assert evaluation.statuses["slow"].value == pytest.approx(0.1 + 0.9 * 0.8)


async def test_a_query_rule_reads_recent_events_only(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "events")
    now = time.time()
    sink.write([{"v": 1, "kind": "request", "ts": now - 600, "prediction": {"d": 50.0}}]
               + [{"v": 1, "kind": "request", "ts": now - i, "prediction": {"d": 10.0 + i}}
                  for i in range(5)])
    sink.close()
    discount = rule(name="discount", query="SELECT avg(prediction.d) FROM events",
                    window="5m", threshold=11.5)
    missing = rule(name="missing", saved="nope", threshold=1)
    evaluation, _events, firing = evaluator([discount, missing], Registry(), FakeClock(now),
                                           tmp_path)
    await evaluation.evaluate()
    assert evaluation.statuses["discount"].value == pytest.approx(12.0)
    assert firing["discount"] is True
    assert evaluation.statuses["missing"].value is None
    assert "no saved query" in (evaluation.statuses["missing"].error or "")


async def test_actions_run_and_a_failing_one_spares_the_others(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []

    async def rollback(notice: AlertNotice) -> None:
        seen.append(("rollback", notice.state))

    async def broken(notice: AlertNotice) -> None:
        raise RuntimeError("down")

    source, clock = Registry(), FakeClock()
    busy = rule(name="busy", metric="buttress_in_flight_requests", threshold=0,
                actions=["broken", "rollback", "log"])
    evaluation, _events, _firing = evaluator(
        [busy], source, clock, tmp_path, actions={"rollback": rollback, "broken": broken})
    source.in_flight.labels("svc").set(1)
    await evaluation.evaluate()
    await evaluation.aclose()
    assert seen == [("rollback", "firing")]
    with pytest.raises(ValueError, match="unknown action"):
        evaluator([rule(metric="m", actions=["page"])], source, clock, tmp_path)


def test_one_process_of_a_group_holds_the_evaluator_lock(tmp_path: Path) -> None:
    first, second = EvaluatorLock(tmp_path / "alerts.lock"), EvaluatorLock(tmp_path / "alerts.lock")
    assert first.acquire()
    assert not second.acquire()
    first.release()
    assert second.acquire()
    second.release()


def predecessor_state(path: Path, *, written_at: float, state: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps({
        "service": "svc", "pid": -1, "written_at": written_at,
        "alerts": {"served": {"state": state, "active_since": written_at - 30}}}))


async def one_round_of_run(evaluation: AlertEvaluator) -> None:
    task = asyncio.create_task(evaluation.run())
    await asyncio.sleep(0.05)  # interval 1 s: the first round runs, the second does not
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await evaluation.aclose()


@pytest.mark.parametrize(("age", "notified"), [(2.0, False), (3600.0, True)])
async def test_a_worker_taking_the_lock_carries_on_from_its_recent_predecessor(
        tmp_path: Path, age: float, notified: bool) -> None:
    """A worker taking over must not notify again what its predecessor already notified;
    a state file left by an earlier run (too old to be a predecessor's) is not carried on."""
    source, clock = Registry(), FakeClock(1_000_000.0)
    source.requests.labels("svc", "200").inc(10)
    served = rule(name="served", metric="buttress_requests_total", threshold=3)
    predecessor_state(tmp_path / "events" / "alerts-state-svc.json",
                      written_at=clock() - age, state="firing")
    evaluation, events, firing = evaluator([served], source, clock, tmp_path, interval=1.0,
                                           lock=EvaluatorLock(tmp_path / "alerts.lock"))
    await one_round_of_run(evaluation)
    assert evaluation.statuses["served"].state == "firing"
    assert firing == {"served": True}
    assert [e["state"] for e in events] == (["firing"] if notified else [])


async def test_a_carried_on_rate_rule_waits_for_its_own_data_before_resolving(
        tmp_path: Path) -> None:
    """A rate needs two snapshots: the first round after a takeover has no value, which must
    not read as 'resolved'."""
    source, clock = Registry(), FakeClock(1_000_000.0)
    fast = rule(name="served", metric="buttress_requests_total", function="rate",
                window="60s", threshold=0.5)
    predecessor_state(tmp_path / "events" / "alerts-state-svc.json",
                      written_at=clock() - 1, state="firing")
    evaluation, events, _ = evaluator([fast], source, clock, tmp_path, interval=1.0,
                                      lock=EvaluatorLock(tmp_path / "alerts.lock"))
    await one_round_of_run(evaluation)
    assert evaluation.statuses["served"].state == "firing"
    source.requests.labels("svc", "200").inc(600)
    clock.advance(10)
    await evaluation.evaluate()  # 60 req/s: still firing, still not notified again
    assert events == []
    clock.advance(30)
    await evaluation.evaluate()
    clock.advance(60)
    await evaluation.evaluate()  # nothing new within the window: resolves, once
    assert [e["state"] for e in events] == ["resolved"]
