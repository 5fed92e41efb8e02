"""Rollback rules: a freshly promoted version that hands out more than the one it replaced
rolls itself back (in the registry, so every replica follows), a healthy re-release of the
same model does not, and of several replicas judging one promotion only one rolls it back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

import buttress as bt
from buttress.observability.alert_rules import AlertRule
from buttress.observability.alerts import AlertNotice
from buttress.pipeline.runtime import Runtime
from buttress.registry import Registry
from tests.services.registry_model import linear_file, make_service, scale_of
from tests.test_hot_swap import body, events, serving, settings

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

RULE = bt.RollbackRule("generous", measure=scale_of, max_increase=0.25, min_requests=100,
                       watch_for="1min")


@contextlib.asynccontextmanager
async def replicas(tmp_path: Path, count: int = 1, rules: Sequence[bt.RollbackRule] = (RULE,)
                   ) -> AsyncIterator[tuple[list[Runtime], Registry]]:
    """``count`` runtimes of one service on one SQLite registry, ``scorer`` v1 stable."""
    registry = Registry(f"sqlite:///{tmp_path}/registry.db", models_dir=tmp_path / "models")
    await registry.register("scorer", linear_file(tmp_path, 1.0), who="alice")
    await registry.promote("scorer", "v1", who="alice")
    runtimes = []
    async with contextlib.AsyncExitStack() as stack:
        for n in range(count):
            events_dir = str(tmp_path / f"replica-{n}" / "events")
            runtime = make_service(rules=rules).build(
                settings(tmp_path).model_copy(update={"events_dir": events_dir}))
            await runtime.start()
            stack.push_async_callback(runtime.stop)
            runtimes.append(runtime)
        try:
            yield runtimes, registry
        finally:
            await registry.aclose()


async def traffic(runtime: Runtime, requests: int) -> None:
    """The same mix of orders every time: what makes two versions comparable."""
    for start in range(0, requests, 25):
        answers = await asyncio.gather(*(runtime.answer(body(i), request_id=f"r{i}")
                                         for i in range(start, start + 25)))
        assert all(a.status == 200 for a in answers)


async def test_an_over_generous_version_rolls_itself_back(tmp_path: Path) -> None:
    async with replicas(tmp_path) as ([runtime], registry):
        await traffic(runtime, 150)
        await registry.register("scorer", linear_file(tmp_path, 2.0), who="alice")
        await registry.promote("scorer", "v2", who="alice", why="retrained")
        await serving(runtime, "v2", within=5)
        await traffic(runtime, 150)
        await serving(runtime, "v1", within=5)  # the rule fired, the watcher followed
        last = (await registry.history("scorer", limit=1))[0]
        assert (last.action, last.who, last.from_version, last.to_version) == (
            "rollback", "auto-rollback", "v2", "v1")
        assert last.why.startswith("rule generous: scale_of 2 vs 1.0")
        assert runtime.metrics.registry.get_sample_value("buttress_model_changes_total", {
            "service": "registry-model", "model": "scorer", "action": "auto_rollback"}) == 1
    timeline = [(e["action"], e["version"]) for e in events(tmp_path / "replica-0", "model")]
    assert timeline == [("swap", "v2"), ("auto_rollback", "v1"), ("swap", "v1")]
    [fired] = [e for e in events(tmp_path / "replica-0", "model")
               if e["action"] == "auto_rollback"]
    assert fired["issued"] is True
    assert fired["rule"] == "generous"
    assert fired["value"] == pytest.approx(2.0, rel=1e-2)


async def test_a_healthy_re_release_of_the_same_model_stays(tmp_path: Path) -> None:
    """Same traffic, same thresholds, the same model registered again: nothing fires."""
    async with replicas(tmp_path) as ([runtime], registry):
        await traffic(runtime, 150)
        await registry.register("scorer", linear_file(tmp_path, 1.0), who="alice")
        await registry.promote("scorer", "v2", who="alice", why="re-release")
        await serving(runtime, "v2", within=5)
        await traffic(runtime, 150)
        await asyncio.sleep(1.5)  # three looks at the rules
        assert runtime.pipeline.model_version == "v2"
        assert (await registry.history("scorer", limit=1))[0].action == "promote"
    assert [e["action"] for e in events(tmp_path / "replica-0", "model")] == ["swap"]


async def test_of_two_replicas_judging_one_promotion_only_one_rolls_it_back(
        tmp_path: Path) -> None:
    async with replicas(tmp_path, count=2) as (runtimes, registry):
        await asyncio.gather(*(traffic(r, 150) for r in runtimes))
        await registry.register("scorer", linear_file(tmp_path, 2.0), who="alice")
        await registry.promote("scorer", "v2", who="alice")
        for runtime in runtimes:
            await serving(runtime, "v2", within=5)
        await asyncio.gather(*(traffic(r, 150) for r in runtimes))
        for runtime in runtimes:
            await serving(runtime, "v1", within=5)
        actions = [(c.action, c.who) for c in await registry.history("scorer")]
        assert actions.count(("rollback", "auto-rollback")) == 1
        assert (await registry.state("scorer")).aliases["stable"] == "v1"


async def test_a_promotion_from_a_clock_10_minutes_behind_is_still_judged(
        tmp_path: Path) -> None:
    """The watch runs on the replica's clock from its swap, not from the time the promoter's
    clock wrote into the history: a CLI on a machine whose clock is 10 minutes behind used to
    leave the promotion unwatched (its ``watch_for`` of 1 min over before it began)."""
    async with replicas(tmp_path) as ([runtime], registry):
        await traffic(runtime, 150)
        await registry.register("scorer", linear_file(tmp_path, 2.0), who="alice")
        late = Registry(f"sqlite:///{tmp_path}/registry.db", models_dir=tmp_path / "models",
                        clock=lambda: time.time() - 600)
        async with late:
            await late.promote("scorer", "v2", who="laptop", why="retrained")
        await serving(runtime, "v2", within=5)
        await traffic(runtime, 150)
        await serving(runtime, "v1", within=5)
        last = (await registry.history("scorer", limit=1))[0]
        assert (last.who, last.from_version, last.to_version) == ("auto-rollback", "v2", "v1")


async def test_a_promotion_from_a_clock_10_minutes_ahead_is_watched_for_watch_for_only(
        tmp_path: Path) -> None:
    """The other way round: a history time 10 minutes ahead used to stretch a 1 s watch to
    10 minutes; the rule must not judge traffic that came after its own watch."""
    brief = bt.RollbackRule("generous", measure=scale_of, max_increase=0.25, min_requests=100,
                            watch_for="1s")
    async with replicas(tmp_path, rules=(brief,)) as ([runtime], registry):
        await traffic(runtime, 150)
        await registry.register("scorer", linear_file(tmp_path, 2.0), who="alice")
        early = Registry(f"sqlite:///{tmp_path}/registry.db", models_dir=tmp_path / "models",
                         clock=lambda: time.time() + 600)
        async with early:
            await early.promote("scorer", "v2", who="laptop", why="retrained")
        await serving(runtime, "v2", within=5)
        await asyncio.sleep(1.5)  # the watch is over
        await traffic(runtime, 150)
        await asyncio.sleep(1.5)  # three looks at the rules
        assert runtime.pipeline.model_version == "v2"
        assert (await registry.history("scorer", limit=1))[0].action == "promote"


async def test_a_rollback_only_if_stable_is_the_judged_version_is_a_no_op_otherwise(
        tmp_path: Path) -> None:
    async with Registry(f"sqlite:///{tmp_path}/registry.db",
                        models_dir=tmp_path / "models") as registry:
        artifact = linear_file(tmp_path, 1.0)
        for version in ("v1", "v2"):
            await registry.register("scorer", artifact, who="alice")
            await registry.promote("scorer", version, who="alice")
        first = await registry.rollback("scorer", who="auto-rollback", if_stable="v2")
        second = await registry.rollback("scorer", who="auto-rollback", if_stable="v2")
        assert first is not None
        assert (first.from_version, first.to_version) == ("v2", "v1")
        assert second is None
        assert [c.action for c in await registry.history("scorer")].count("rollback") == 1


def test_a_rule_is_validated_when_written_and_reads_well() -> None:
    assert repr(RULE) == ("RollbackRule('generous', measure=<scale_of>, max_increase=0.25, "
                          "min_requests=100, watch_for=60s)")
    assert repr(bt.RollbackRule("fallbacks", measure="fallback_rate", max_rise=0.05)) == (
        "RollbackRule('fallbacks', measure='fallback_rate', max_rise=0.05, min_requests=200, "
        "watch_for=300s)")
    with pytest.raises(ValueError, match="max_increase"):
        bt.RollbackRule("x", measure=scale_of)
    with pytest.raises(ValueError, match="fallback_rate"):
        bt.RollbackRule("x", measure="mean", max_rise=1)
    with pytest.raises(ValueError, match="min_requests"):
        bt.RollbackRule("x", measure="error_rate", max_rise=0.01, min_requests=0)
    with pytest.raises(ValueError, match="watch_for"):
        bt.RollbackRule("x", measure="error_rate", max_rise=0.01, watch_for="soon")
    with pytest.raises(ValueError, match="max_rise"):
        bt.RollbackRule("x", measure="error_rate", max_rise=-1)
    assert RULE.breached(1.26, 1.0)
    assert not RULE.breached(1.25, 1.0)


def test_rules_need_a_model_from_the_registry() -> None:
    svc = bt.Service("plain", input=bt.Input)
    with pytest.raises(ValueError, match="FromRegistry"):
        svc.model(model=lambda rows: rows, rollback=[RULE])


async def test_an_alert_rule_with_the_rollback_action_rolls_the_registry_model_back(
        tmp_path: Path) -> None:
    """``actions = ["rollback"]`` on an alert rule (service metrics: fallback rate, error rate,
    p99 latency) means the registry rollback when the service serves a registry model."""
    rule = AlertRule.model_validate({
        "name": "fallbacks_high", "metric": "buttress_fallbacks_total", "function": "rate",
        "threshold": 0.1, "actions": ["rollback"], "labels": {"model": "scorer"}})
    async with replicas(tmp_path, rules=()) as ([runtime], registry):
        await registry.register("scorer", linear_file(tmp_path, 2.0), who="alice")
        await registry.promote("scorer", "v2", who="alice")
        await serving(runtime, "v2", within=5)
        assert runtime.registry_models is not None
        action = runtime.registry_models.alert_actions()["rollback"]
        await action(AlertNotice("registry-model", rule, "resolved", 0.0, time.time()))
        assert runtime.pipeline.model_version == "v2"  # resolving rolls nothing back
        await action(AlertNotice("registry-model", rule, "firing", 0.4, time.time()))
        await serving(runtime, "v1", within=5)
        await action(AlertNotice("registry-model", rule, "firing", 0.4, time.time()))
        last = (await registry.history("scorer", limit=1))[0]
        assert (last.who, last.from_version, last.to_version) == ("auto-rollback", "v2", "v1")
        assert last.why.startswith("alert [FIRING] fallbacks_high")
        assert [c.action for c in await registry.history("scorer")].count("rollback") == 1
