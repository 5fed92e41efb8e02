"""One request end to end in process: ``Service.build(settings)`` then ``Runtime.answer``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

import buttress as bt
from buttress.observability.events import MemorySink
from buttress.pipeline.context import AppliedFallback
from buttress.pipeline.runtime import Answer, Runtime
from buttress.resilience.deadline import InvalidDeadline

FEATURES_MISSING = bt.Category.FEATURES_MISSING
FEATURES_UNAVAILABLE = bt.Category.FEATURES_UNAVAILABLE


class Query(bt.Input):
    x: int
    label: str = "none"


class Result(bt.Output):
    value: float


@dataclass
class Harness:
    runtime: Runtime
    sink: MemorySink

    async def ask(self, document: Any = None, *, body: bytes | None = None,
                  request_id: str = "r", deadline_s: float | None = None) -> Answer:
        raw = body if body is not None else orjson.dumps(document or {"x": 1})
        return await self.runtime.answer(raw, request_id=request_id, deadline_s=deadline_s)

    def sample(self, name: str, **labels: str) -> float:
        labels = {"service": self.runtime.service.name, **labels}
        return self.runtime.metrics.registry.get_sample_value(name, labels) or 0.0

    def events(self, kind: str = "request") -> list[dict[str, Any]]:
        """The events of one kind (``request``: one per answer; ``exception``: one per caught
        exception)."""
        self.runtime.events.flush()
        return [e for e in self.sink.events if e.get("kind") == kind]


@asynccontextmanager
async def serving(service: bt.Service, tmp_path: Path, **settings: Any) -> AsyncIterator[Harness]:
    runtime = service.build(bt.Settings(events_dir=str(tmp_path / "events"), **settings))
    sink = MemorySink()
    runtime.events.sinks.append(sink)
    await runtime.start()
    try:
        yield Harness(runtime, sink)
    finally:
        await runtime.stop()


def service(name: str = "test", **kwargs: Any) -> bt.Service:
    return bt.Service(name, input=Query, **kwargs)


def body(answer: Answer) -> Any:
    return orjson.loads(answer.body)


# --- stages: order, concurrency, timeouts, fallbacks -----------------------------------------


async def test_independent_stages_run_concurrently(tmp_path: Path) -> None:
    """Each stage waits for the other to have started: run one after the other, the first
    would wait forever (and time out); run concurrently, both finish."""
    svc = service()
    left_started, right_started = asyncio.Event(), asyncio.Event()

    @svc.stage(timeout="1s", fallback=lambda q: -1)
    async def left(q: Query) -> int:
        left_started.set()
        await right_started.wait()
        return 1

    @svc.stage(timeout="1s", fallback=lambda q: -2)
    async def right(q: Query) -> int:
        right_started.set()
        await left_started.wait()
        return 2

    @svc.respond
    def respond(q: Query, left: int, right: int) -> dict[str, int]:
        return {"sum": left + right}

    async with serving(svc, tmp_path, deadline="2s") as h:
        answer = await h.ask()
    assert (answer.status, body(answer)) == (200, {"sum": 3})
    assert set(answer.context.stage_ms) == {"left", "right"}


async def test_a_level_runs_concurrently_from_the_first_stage_that_suspends(
        tmp_path: Path) -> None:
    """Stages that finish at once run inline; from the first that suspends on, the rest run
    concurrently; a timeout a stage enters itself (as redis-py does) stays its own, and a
    stage over its own timeout gets its fallback."""
    svc = service()
    slow_started, client_done = asyncio.Event(), asyncio.Event()

    @svc.stage
    async def instant(q: Query) -> int:
        return 1

    @svc.stage(timeout="1s")
    async def client_timeout(q: Query) -> int:
        try:
            async with asyncio.timeout(0.02):  # its own, like a client's socket timeout
                await asyncio.sleep(1)
        except TimeoutError:
            client_done.set()
            await asyncio.wait_for(slow_started.wait(), 0.5)  # `slow` runs meanwhile
            return 2
        return -2

    @svc.stage
    async def slow(q: Query) -> int:
        slow_started.set()
        await asyncio.wait_for(client_done.wait(), 0.5)
        return 3

    @svc.stage(timeout="30ms", fallback=lambda q: -4, category=FEATURES_UNAVAILABLE)
    async def too_slow(q: Query) -> int:
        await asyncio.sleep(1)
        return 4

    @svc.respond
    def respond(q: Query, instant: int, client_timeout: int, slow: int,
                too_slow: int) -> dict[str, int]:
        return {"values": [instant, client_timeout, slow, too_slow]}

    async with serving(svc, tmp_path, deadline="2s") as h:
        answer = await h.ask()
    assert (answer.status, body(answer)) == (200, {"values": [1, 2, 3, -4]})
    assert answer.context.fallback_categories == ["features_unavailable"]


async def test_dependencies_come_from_parameter_names(tmp_path: Path) -> None:
    svc = service()
    order: list[str] = []

    @svc.stage
    def combined(q: Query, base: int, scale: int) -> int:  # declared first, runs last
        order.append("combined")
        return base * scale

    @svc.stage
    async def base(q: Query) -> int:
        order.append("base")
        return q.x + 1

    @svc.stage
    def scale(q: Query, ctx: bt.RequestContext) -> int:
        order.append("scale")
        assert ctx.request_id == "deps"
        return 10

    @svc.respond
    def respond(q: Query, combined: int) -> Result:
        return Result(value=combined)

    async with serving(svc, tmp_path) as h:
        answer = await h.ask({"x": 4}, request_id="deps")
    assert body(answer) == {"value": 50.0}
    assert order[-1] == "combined"


async def test_stage_timeout_serves_its_fallback_with_its_category(tmp_path: Path) -> None:
    svc = service()
    calls: list[str] = []

    @svc.stage(timeout="50ms", fallback=lambda q: -q.x, category=FEATURES_UNAVAILABLE)
    async def lookup(q: Query) -> int:
        calls.append("lookup")
        await asyncio.sleep(2)
        return q.x

    @svc.respond
    def respond(q: Query, lookup: int) -> Result:
        return Result(value=lookup)

    async with serving(svc, tmp_path, deadline="1s") as h:
        started = time.perf_counter()
        answer = await h.ask({"x": 7})
        elapsed = time.perf_counter() - started
        assert h.sample("buttress_fallbacks_total", stage="lookup",
                        category="features_unavailable") == 1
    assert answer.status == 200
    assert body(answer) == {"value": -7.0}  # the fallback is a function of the input
    assert 0.05 <= elapsed < 0.5
    [fallback] = answer.context.fallbacks
    assert (fallback.stage, fallback.category) == ("lookup", FEATURES_UNAVAILABLE)
    assert "no answer within" in fallback.detail
    assert "lookup" not in answer.context.stage_ms


async def test_request_deadline_bounds_a_stage_without_its_own_timeout(tmp_path: Path) -> None:
    svc = service()

    @svc.stage(fallback=0, category=FEATURES_UNAVAILABLE)
    async def slow(q: Query) -> int:
        await asyncio.sleep(2)
        return 1

    @svc.respond
    def respond(q: Query, slow: int) -> Result:
        return Result(value=slow)

    async with serving(svc, tmp_path, deadline="2s") as h:
        started = time.perf_counter()
        answer = await h.ask(deadline_s=0.08)
        elapsed = time.perf_counter() - started
    assert answer.context.fallback_categories == ["features_unavailable"]
    assert 0.08 <= elapsed < 0.5


async def test_stage_error_with_fallback_is_recorded(tmp_path: Path) -> None:
    svc = service()

    @svc.stage(fallback={"default": True}, category=FEATURES_UNAVAILABLE, breaker=None)
    def features(q: Query) -> dict[str, bool]:
        raise ConnectionError("store down")

    @svc.respond
    def respond(q: Query, features: dict[str, bool]) -> dict[str, Any]:
        return features

    async with serving(svc, tmp_path) as h:
        answer = await h.ask()
        [event] = h.events()
    assert (answer.status, body(answer)) == (200, {"default": True})
    assert answer.context.fallbacks == [
        AppliedFallback("features", FEATURES_UNAVAILABLE, "ConnectionError: store down")]
    assert event["fallbacks"] == ["features_unavailable"]
    assert event["fallback_stages"] == ["features"]
    assert event["error_category"] is None


async def test_stage_without_fallback_failing_is_503_with_the_error_json(tmp_path: Path) -> None:
    svc = service()

    @svc.stage(category=FEATURES_UNAVAILABLE)
    def required(q: Query) -> int:
        raise RuntimeError("boom")

    @svc.respond
    def respond(q: Query, required: int) -> Result:
        return Result(value=required)

    async with serving(svc, tmp_path) as h:
        answer = await h.ask(request_id="fails")
        assert h.sample("buttress_requests_total", status="503") == 1
        [event] = h.events()
    assert answer.status == 503
    assert body(answer) == {"error": {
        "category": "features_unavailable",
        "message": "stage 'required' failed: RuntimeError: boom",
        "fields": []}}
    assert (event["status"], event["error_category"], event["error_stage"]) == (
        503, "features_unavailable", "required")


async def test_stage_without_fallback_timing_out_is_503(tmp_path: Path) -> None:
    svc = service()

    @svc.stage(timeout="20ms")
    async def required(q: Query) -> int:
        await asyncio.sleep(1)
        return 1

    @svc.respond
    def respond(q: Query, required: int) -> Result:
        return Result(value=required)

    async with serving(svc, tmp_path) as h:
        answer = await h.ask()
    assert answer.status == 503
    assert body(answer)["error"]["category"] == "internal"
    assert "no answer within" in body(answer)["error"]["message"]


async def test_failing_respond_is_503_internal(tmp_path: Path) -> None:
    svc = service()

    @svc.respond
    def respond(q: Query) -> Result:
        return Result(value="not a number")  # type: ignore[arg-type]

    async with serving(svc, tmp_path) as h:
        answer = await h.ask()
        [event] = h.events()
    assert answer.status == 503
    assert body(answer)["error"]["category"] == "internal"
    assert event["error_stage"] == "respond"


async def test_features_missing_is_recorded_through_ctx_record(tmp_path: Path) -> None:
    svc = service()
    known = {1: 0.5}

    @svc.stage(fallback=0.0, category=FEATURES_UNAVAILABLE)
    def user(q: Query, ctx: bt.RequestContext) -> float:
        if q.x not in known:
            ctx.record(FEATURES_MISSING, "user", f"user {q.x}")
            return 0.1
        return known[q.x]

    @svc.respond
    def respond(q: Query, user: float) -> Result:
        return Result(value=user)

    async with serving(svc, tmp_path) as h:
        found = await h.ask({"x": 1})
        missing = await h.ask({"x": 2})
        assert h.sample("buttress_fallbacks_total", stage="user",
                        category="features_missing") == 1
        events = h.events()
    assert found.context.fallbacks == []
    assert body(missing) == {"value": 0.1}
    assert missing.context.fallbacks == [AppliedFallback("user", FEATURES_MISSING, "user 2")]
    assert [e["fallbacks"] for e in events] == [[], ["features_missing"]]


# --- the model stage and its breaker ----------------------------------------------------------


def model_service(predict: Callable[[np.ndarray], Any], *, failures: int = 2,
                  timeout: str = "1s", batch: bt.Batch | None = None) -> bt.Service:
    svc = service("modelled")

    @svc.model(model=predict, version="v3", timeout=timeout, fallback=lambda q: [-1.0],
               breaker=bt.Breaker(consecutive_failures=failures, open_for="1h"), batch=batch)
    def scorer(q: Query) -> np.ndarray:
        return np.array([[q.x]], dtype=np.float64)

    @svc.respond
    def respond(q: Query, scorer: Any) -> Result:
        return Result(value=float(np.asarray(scorer).ravel()[0]))

    return svc


async def test_model_predictions_reach_respond(tmp_path: Path) -> None:
    svc = model_service(lambda rows: rows[:, 0] * 2)
    async with serving(svc, tmp_path) as h:
        answer = await h.ask({"x": 21})
        assert h.sample("buttress_model_latency_seconds_count", model="scorer",
                        version="v3") == 1
    assert body(answer) == {"value": 42.0}
    assert answer.context.model_version == "v3"
    assert "scorer" in answer.context.stage_ms


async def test_model_error_then_breaker_open_is_model_unavailable(tmp_path: Path) -> None:
    calls: list[int] = []

    def predict(rows: np.ndarray) -> np.ndarray:
        calls.append(int(rows[0, 0]))
        if rows[0, 0] < 0:
            raise ValueError("negative")
        return rows[:, 0]

    async with serving(model_service(predict, failures=2), tmp_path) as h:
        first = await h.ask({"x": -1})
        second = await h.ask({"x": -2})
        refused = await h.ask({"x": 5})  # a good request, but the breaker is open
        assert h.sample("buttress_breaker_open", stage="scorer") == 1
    assert first.context.fallback_categories == ["model_error"]
    assert second.context.fallback_categories == ["model_error"]
    assert refused.context.fallback_categories == ["model_unavailable"]
    assert body(refused) == {"value": -1.0}
    assert calls == [-1, -2]  # the open breaker did not call the model


@pytest.mark.parametrize("batch", [None, bt.Batch(max_size=4, max_wait="1ms")],
                         ids=["direct", "batched"])
async def test_model_timeout(tmp_path: Path, batch: bt.Batch | None) -> None:
    slow_calls: list[float] = []

    def slow(rows: np.ndarray) -> np.ndarray:
        if rows[0, 0] > 0:
            slow_calls.append(rows[0, 0])
            time.sleep(0.5)
        return rows[:, 0]

    async with serving(model_service(slow, timeout="50ms", batch=batch), tmp_path) as h:
        started = time.perf_counter()
        answer = await h.ask({"x": 1})
        elapsed = time.perf_counter() - started
    assert slow_calls == [1]  # the model was called, and overran
    assert answer.context.fallback_categories == ["model_timeout"]
    assert elapsed < 0.3, f"a 50 ms model timeout answered after {elapsed:.3f} s"


async def test_two_runtimes_of_one_service_share_no_state(tmp_path: Path) -> None:
    def predict(rows: np.ndarray) -> np.ndarray:
        if rows[0, 0] < 0:
            raise ValueError("negative")
        return rows[:, 0]

    svc = model_service(predict, failures=2)
    async with serving(svc, tmp_path / "a") as a, serving(svc, tmp_path / "b") as b:
        assert a.runtime.metrics.registry is not b.runtime.metrics.registry
        for _ in range(2):
            await a.ask({"x": -1})
        assert (await a.ask({"x": 3})).context.fallback_categories == ["model_unavailable"]
        healthy = await b.ask({"x": 3})
        assert healthy.context.fallbacks == []
        assert body(healthy) == {"value": 3.0}
        assert a.sample("buttress_requests_total", status="200") == 3
        assert b.sample("buttress_requests_total", status="200") == 1
        assert a.sample("buttress_breaker_open", stage="scorer") == 1
        assert b.sample("buttress_breaker_open", stage="scorer") == 0
        assert len(a.events()) == 3
        assert len(b.events()) == 1


# --- the input and the request ----------------------------------------------------------------


def echo_service() -> bt.Service:
    svc = service("echo")

    @svc.respond
    def respond(q: Query) -> dict[str, Any]:
        return {"x": q.x, "label": q.label}

    return svc


async def test_defaulted_input_is_an_input_contract_fallback(tmp_path: Path) -> None:
    async with serving(echo_service(), tmp_path) as h:
        answer = await h.ask({"x": 3, "label": 17})
        assert h.sample("buttress_input_contract_violations_total", field="label",
                        kind="defaulted") == 1
        assert h.sample("buttress_fallbacks_total", stage="input",
                        category="input_contract") == 1
        [event] = h.events()
    assert body(answer) == {"x": 3, "label": "none"}
    assert answer.context.fallback_categories == ["input_contract"]
    assert event["violations"][0]["field"] == "label"
    assert event["violations"][0]["kind"] == "defaulted"


async def test_unknown_keys_from_clients_add_no_metric_series(tmp_path: Path) -> None:
    """10,000 distinct unknown keys were 20,000 lines of /metrics for good (a permanent series
    per key): now they are one series, and their names are in each request's event."""
    async with serving(echo_service(), tmp_path) as h:
        await h.ask({"x": 1, "surprise": 1})
        before, _ = h.runtime.metrics.render()
        for request in range(10):
            keys = {f"key-{request}-{i}": i for i in range(1_000)}
            answer = await h.ask({"x": 1, **keys}, request_id=f"r{request}")
            assert answer.status == 200
        after, _ = h.runtime.metrics.render()
        assert len(after) - len(before) < 200, after.decode()[-2000:]
        assert h.sample("buttress_input_contract_violations_total", field="<unknown>",
                        kind="unknown_key") == 10_001
        events = {e["request_id"]: e for e in h.events()}
    listed = [v["field"] for v in events["r3"]["violations"] if "count" not in v]
    assert listed == [f"key-3-{i}" for i in range(20)]
    [rest] = [v for v in events["r3"]["violations"] if "count" in v]
    assert rest["count"] == 980


@pytest.mark.parametrize(("raw", "status"), [
    (b'{"label": "only"}', 422), (b"{", 400), (b"[[[[[[[[[[]]]]]]]]]]", 400), (b"[]", 422),
])
async def test_refused_inputs_answer_with_the_error_json_and_one_event(
        tmp_path: Path, raw: bytes, status: int) -> None:
    async with serving(echo_service(), tmp_path, max_json_depth=8) as h:
        answer = await h.ask(body=raw)
        assert h.sample("buttress_requests_total", status=str(status)) == 1
        [event] = h.events()
    assert answer.status == status
    error = body(answer)["error"]
    assert error["category"] == "input_invalid"
    assert set(error) == {"category", "message", "fields"}
    assert (event["status"], event["error_category"]) == (status, "input_invalid")


async def test_transport_rejection_is_one_event(tmp_path: Path) -> None:
    async with serving(echo_service(), tmp_path) as h:
        answer = h.runtime.reject(413, "body larger than 10 bytes", "big-1")
        [event] = h.events()
    assert answer.status == 413
    assert body(answer)["error"]["message"] == "body larger than 10 bytes"
    assert (event["request_id"], event["status"]) == ("big-1", 413)


async def test_warm_up_is_neither_counted_nor_logged(tmp_path: Path) -> None:
    calls: list[int] = []
    svc = bt.Service("warm", input=Query, example={"x": 99})

    @svc.respond
    def respond(q: Query) -> dict[str, int]:
        calls.append(q.x)
        return {"x": q.x}

    async with serving(svc, tmp_path) as h:
        assert calls, "the example did not run"
        assert set(calls) == {99}
        assert h.runtime.ready
        assert h.events() == []
        assert h.sample("buttress_requests_total", status="200") == 0


@pytest.mark.parametrize(("header", "expected"), [
    (None, 0.25), ("", 0.25), ("100", 0.1), ("1500", 1.5), ("600000", 2.0), ("0", 0.0),
    ("0.5", 0.0005),
])
async def test_deadline_header_lowers_and_is_capped(tmp_path: Path, header: str | None,
                                                    expected: float) -> None:
    async with serving(echo_service(), tmp_path, deadline="250ms", max_deadline="2s") as h:
        assert h.runtime.deadline_for(header) == pytest.approx(expected)


@pytest.mark.parametrize("header", ["soon", "-5", "inf", "-inf", "NaN", "1e400", "0x10"])
async def test_a_malformed_deadline_header_is_refused(tmp_path: Path, header: str) -> None:
    async with serving(echo_service(), tmp_path) as h:
        with pytest.raises(InvalidDeadline, match="X-Deadline-Ms"):
            h.runtime.deadline_for(header)


# --- declaration errors -----------------------------------------------------------------------


def test_unknown_dependency_is_named_at_build() -> None:
    svc = service()

    @svc.stage
    def needs(q: Query, nowhere: int) -> int:
        return nowhere

    @svc.respond
    def respond(q: Query, needs: int) -> Result:
        return Result(value=needs)

    with pytest.raises(ValueError, match="'nowhere'"):
        svc.build()


def test_cycle_is_refused_at_build() -> None:
    svc = service()

    @svc.stage
    def a(q: Query, b: int) -> int:
        return b

    @svc.stage
    def b(q: Query, a: int) -> int:
        return a

    @svc.respond
    def respond(q: Query) -> Result:
        return Result(value=0)

    with pytest.raises(ValueError, match="cycle"):
        svc.build()


def test_service_without_respond_or_with_duplicate_stages_is_refused() -> None:
    svc = service()
    with pytest.raises(ValueError, match="respond"):
        svc.build()

    @svc.stage
    def a(q: Query) -> int:
        return 1

    with pytest.raises(ValueError, match="already has a stage"):
        svc.stage(a)
