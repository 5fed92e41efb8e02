"""A model stage served from the registry follows its alias: the new version is loaded and
warmed before one atomic switch, requests in flight finish on the version they started
with, no cached answer of another version is served, and a version that does not load or
warm up is never switched to."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

import buttress as bt
from buttress.pipeline import follow
from buttress.pipeline.follow import replica_id
from buttress.pipeline.live import ModelSet
from buttress.pipeline.runtime import Answer, Runtime
from buttress.pipeline.warm_up import SLOW_TRIES
from buttress.registry import Registry
from buttress.resilience.categories import Category
from tests.services.registry_model import (
    EXAMPLE,
    broken_file,
    linear_file,
    make_service,
)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

SCALES = {"v1": 1.0, "v2": 2.0}


def settings(tmp_path: Path, **extra: Any) -> bt.Settings:
    return bt.Settings(events_dir=str(tmp_path / "events"),
                       registry_url=f"sqlite:///{tmp_path}/registry.db",
                       models_dir=str(tmp_path / "models"), max_concurrency="off",
                       deadline=2.0, **extra)


@contextlib.asynccontextmanager
async def deployed(tmp_path: Path, *, cache: bool = False,
                   rules: Sequence[bt.RollbackRule] = ()
                   ) -> AsyncIterator[tuple[Runtime, Registry]]:
    """``scorer`` v1 (scale 1) registered and stable; a runtime serving it, started."""
    registry = Registry(f"sqlite:///{tmp_path}/registry.db", models_dir=tmp_path / "models")
    await registry.register("scorer", linear_file(tmp_path, 1.0), who="alice")
    await registry.promote("scorer", "v1", who="alice")
    runtime = make_service(cache=cache, rules=rules).build(settings(tmp_path))
    await runtime.start()
    try:
        yield runtime, registry
    finally:
        await runtime.stop()
        await registry.aclose()


def body(i: int) -> bytes:
    return orjson.dumps({"x": [(i % 7) / 10, (i % 5) / 10, 0.5]})


def scale_of(answer: Answer, i: int) -> float:
    x = orjson.loads(body(i))["x"]
    return float(orjson.loads(answer.body)["score"]) / sum(x)


async def serving(runtime: Runtime, version: str, within: float) -> float:
    """Seconds until the runtime serves ``version`` (fails after ``within``)."""
    started = time.monotonic()
    while runtime.pipeline.model_version != version:
        assert time.monotonic() - started < within, (
            f"still serving {runtime.pipeline.model_version}, not {version}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def events(tmp_path: Path, kind: str) -> list[dict[str, Any]]:
    found = [orjson.loads(line) for path in sorted((tmp_path / "events").glob("*.jsonl"))
             for line in path.read_bytes().splitlines() if line.strip()]
    return [e for e in found if e.get("kind") == kind]


async def test_serves_the_stable_version_and_says_so(tmp_path: Path) -> None:
    async with deployed(tmp_path) as (runtime, _registry):
        answer = await runtime.answer(body(3), request_id="r")
        assert answer.status == 200
        assert not answer.context.fallbacks
        assert answer.context.model_version == "v1"
        assert scale_of(answer, 3) == pytest.approx(1.0, rel=1e-3)


async def test_a_hot_swap_under_concurrent_load_fails_no_request(tmp_path: Path) -> None:
    """200 requests in flight at all times while v2 is promoted: every answer succeeds, is
    labelled v1 or v2, and was computed by the version it is labelled with (the cache keys
    carry the version: no cached v1 answer goes out as v2)."""
    async with deployed(tmp_path, cache=True) as (runtime, registry):
        await registry.register("scorer", linear_file(tmp_path, 2.0), who="alice")
        answers: list[tuple[int, Answer]] = []
        stop = asyncio.Event()

        async def client(k: int) -> None:
            i = k
            while not stop.is_set():
                answers.append((i, await runtime.answer(body(i), request_id=f"r{i}")))
                i += 200
                await asyncio.sleep(0)  # a memory cache hit never suspends: let others run

        clients = [asyncio.ensure_future(client(k)) for k in range(200)]
        try:
            await asyncio.sleep(0.3)
            await registry.promote("scorer", "v2", who="alice", why="hot swap test")
            await serving(runtime, "v2", within=10)
            switched = len(answers)
            await asyncio.sleep(0.3)
        finally:
            stop.set()
            await asyncio.gather(*clients)
    assert len(answers) > switched + 200
    assert switched > 200
    versions = {a.context.model_version for _, a in answers}
    assert versions == {"v1", "v2"}
    for i, answer in answers:
        assert answer.status == 200, answer.body
        assert not answer.context.fallbacks, answer.body
        scale = SCALES[answer.context.model_version]
        assert scale_of(answer, i) == pytest.approx(scale, rel=1e-3), answer.context.cache
    # once switched, whatever starts is v2 (the last 200 may have started just before)
    assert {a.context.model_version for _, a in answers[switched + 200:]} == {"v2"}


async def test_no_cached_answer_of_another_version_is_served(tmp_path: Path) -> None:
    async with deployed(tmp_path, cache=True) as (runtime, registry):
        first = await runtime.answer(body(1), request_id="a")
        again = await runtime.answer(body(1), request_id="b")
        assert (first.context.cache, again.context.cache) == ("miss", "hit")
        await registry.register("scorer", linear_file(tmp_path, 2.0), who="alice")
        await registry.promote("scorer", "v2", who="alice")
        await serving(runtime, "v2", within=5)
        after = await runtime.answer(body(1), request_id="c")
        assert (after.context.cache, after.context.model_version) == ("miss", "v2")
        assert scale_of(after, 1) == pytest.approx(2.0, rel=1e-3)
        await registry.rollback("scorer", who="alice")
        await serving(runtime, "v1", within=5)
        back = await runtime.answer(body(1), request_id="d")  # v1's own entry, still valid
        assert (back.context.cache, back.context.model_version) == ("hit", "v1")
        assert scale_of(back, 1) == pytest.approx(1.0, rel=1e-3)


async def test_a_version_that_fails_to_load_or_warm_up_is_never_switched_to(
        tmp_path: Path) -> None:
    async with deployed(tmp_path) as (runtime, registry):
        refused = runtime.metrics.registry.get_sample_value

        def count(reason: str) -> float:
            return refused("buttress_model_loads_refused_total", {
                "service": "registry-model", "model": "scorer", "reason": reason}) or 0.0

        broken = await registry.register("scorer", broken_file(tmp_path), who="mallory")
        wrong_shape = await registry.register(
            "scorer", linear_file(tmp_path, 2.0, features=2), who="mallory")
        tampered = await registry.register("scorer", linear_file(tmp_path, 3.0), who="mallory")
        (tmp_path / "models" / tampered.path).write_bytes(
            linear_file(tmp_path, 9.0, name="evil.skops").read_bytes())
        for record, reason in [(broken, "broken"), (wrong_shape, "warm_up"),
                               (tampered, "checksum")]:
            await registry.promote("scorer", record.version, who="mallory")
            started = time.monotonic()
            while count(reason) < 1:
                assert time.monotonic() - started < 5, f"{record.version} not refused"
                await asyncio.sleep(0.02)
            assert runtime.pipeline.model_version == "v1"
            answer = await runtime.answer(body(2), request_id="r")
            assert answer.context.model_version == "v1"
            assert not answer.context.fallbacks
        # it still follows the alias to a version that works
        good = await registry.register("scorer", linear_file(tmp_path, 2.0), who="alice")
        await registry.promote("scorer", good.version, who="alice")
        await serving(runtime, good.version, within=5)
    refusals = [(e["version"], e["reason"]) for e in events(tmp_path, "model")
                if e["action"] == "refused"]
    assert refusals == [("v2", "broken"), ("v3", "warm_up"), ("v4", "checksum")]
    swaps = [(e["previous_version"], e["version"]) for e in events(tmp_path, "model")
             if e["action"] == "swap"]
    assert swaps == [("v1", "v5")]


def slow_at_first(runtime: Runtime, slow_warm_ups: int) -> list[str]:
    """The first ``slow_warm_ups`` warm-ups come back as a loaded machine makes them: every
    model call past its timeout (the model ran; its answers are marked timed out). Returns
    the outcome of each warm-up, ``slow`` or ``ran``."""
    real = runtime.warm_up_models
    outcomes: list[str] = []

    async def warm_up_models(models: ModelSet) -> list[Answer]:
        answers = await real(models)
        if len(outcomes) < slow_warm_ups:
            for answer in answers:
                answer.context.record(Category.MODEL_TIMEOUT, "scorer", "no answer within 500 ms")
            outcomes.append("slow")
        else:
            outcomes.append("ran")
        return answers

    runtime.warm_up_models = warm_up_models  # type: ignore[method-assign]
    return outcomes


async def test_a_version_only_too_slow_at_warm_up_is_tried_again_at_the_next_heartbeat(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loaded machine made the new version miss its timeout at warm-up: the replica does
    not give it up for good (the alias names it), it warms it up again at each heartbeat."""
    monkeypatch.setattr(follow, "HEARTBEAT", 0.05)
    async with deployed(tmp_path) as (runtime, registry):
        outcomes = slow_at_first(runtime, slow_warm_ups=2)
        await registry.register("scorer", linear_file(tmp_path, 2.0), who="alice")
        await registry.promote("scorer", "v2", who="alice")
        await serving(runtime, "v2", within=5)
        assert outcomes == ["slow", "slow", "ran"]
    model_events = [(e["action"], e["version"], e.get("tries"))
                    for e in events(tmp_path, "model")]
    assert model_events == [("deferred", "v2", 1), ("deferred", "v2", 2), ("swap", "v2", None)]


async def test_a_version_too_slow_at_every_warm_up_is_refused_at_last(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follow, "HEARTBEAT", 0.05)
    async with deployed(tmp_path) as (runtime, registry):
        outcomes = slow_at_first(runtime, slow_warm_ups=100)
        await registry.register("scorer", linear_file(tmp_path, 2.0), who="alice")
        await registry.promote("scorer", "v2", who="alice")
        started = time.monotonic()
        while len(outcomes) < SLOW_TRIES:
            assert time.monotonic() - started < 10, outcomes
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # ten heartbeats more: none warms v2 up again
        assert outcomes == ["slow"] * SLOW_TRIES
        assert runtime.pipeline.model_version == "v1"
    actions = [(e["action"], e.get("reason")) for e in events(tmp_path, "model")]
    assert actions == [("deferred", "warm_up_slow")] * (SLOW_TRIES - 1) + [
        ("refused", "warm_up")]


async def test_replaced_versions_are_closed_after_their_requests(tmp_path: Path) -> None:
    async with deployed(tmp_path) as (runtime, registry):
        old = runtime.pipeline.stages["scorer"].live
        assert old is not None
        await registry.register("scorer", linear_file(tmp_path, 2.0), who="alice")
        await registry.promote("scorer", "v2", who="alice")
        await serving(runtime, "v2", within=5)
        assert not old.closed  # requests that started on v1 may still reach it
        started = time.monotonic()
        while not old.closed:
            assert time.monotonic() - started < runtime.settings.max_deadline + 2
            await asyncio.sleep(0.05)


async def test_the_replica_reports_what_it_serves(tmp_path: Path) -> None:
    async with deployed(tmp_path) as (runtime, registry):
        await registry.register("scorer", linear_file(tmp_path, 2.0), who="alice")
        await registry.promote("scorer", "v2", who="alice")
        await serving(runtime, "v2", within=5)
        await asyncio.sleep(0.2)
        [report] = await registry.serving("scorer")
        assert (report.version, report.replica) == ("v2", replica_id())


def test_the_example_is_what_warm_up_serves() -> None:
    assert make_service().example == EXAMPLE
