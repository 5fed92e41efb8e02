"""Prediction summaries, exception events and loop lag: what a service tells beyond statuses."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import buttress as bt
from buttress.observability.events import MemorySink
from buttress.observability.exceptions import ExceptionEvents
from tests.support import FakeClock
from tests.test_pipeline import Query, Result, serving


def scored_service() -> bt.Service:
    svc = bt.Service("scored", input=Query, output=Result)

    def score(rows: Any) -> np.ndarray:
        values = np.asarray(rows, dtype=float)[:, 0]
        if values[0] < 0:
            raise ValueError("negative x")
        return values * 2.0

    @svc.model(model=score, fallback=lambda q: -1.0, breaker=None)
    def model(q: Query) -> list[list[float]]:
        return [[float(q.x)]]

    @svc.stage(breaker=None)
    def gate(q: Query) -> int:
        if q.label == "refuse":
            raise RuntimeError("refused")
        return 0

    @svc.respond
    def respond(q: Query, model: Any, gate: int) -> Result:
        return Result(value=float(np.asarray(model).reshape(-1)[0]))

    @svc.log_prediction
    def summary(q: Query, response: Result | None) -> dict[str, Any]:
        return {"x": q.x, "label": q.label,
                "value": None if response is None else response.value}

    return svc


async def test_each_answer_carries_the_services_summary(tmp_path: Path) -> None:
    async with serving(scored_service(), tmp_path) as h:
        await h.ask({"x": 3, "label": "a"})
        await h.ask({"x": -1})  # the model fails: the fallback is summarized too
        await h.ask({"x": 1, "label": "refuse"})  # 503: no response
        await h.ask(body=b"{nope")  # no input to summarize
        events = h.events()
    assert [(e["status"], e["prediction"]) for e in events] == [
        (200, {"x": 3, "label": "a", "value": 6.0}),
        (200, {"x": -1, "label": "none", "value": -1.0}),
        (503, {"x": 1, "label": "refuse", "value": None}),
        (400, None),
    ]
    assert all(e["v"] == 1 and e["kind"] == "request" for e in events)


async def test_sampling_leaves_out_clean_successes_only(tmp_path: Path) -> None:
    async with serving(scored_service(), tmp_path, log_sample_rate=0.0) as h:
        for _ in range(5):
            await h.ask({"x": 2})
        await h.ask({"x": -2})
        await h.ask({"x": 2, "label": "refuse"})
        events = h.events()
    assert len(events) == 7, "sampling never drops the request event itself"
    assert [e["prediction"] is not None for e in events] == [False] * 5 + [True, True]


async def test_a_failing_summary_leaves_an_error_in_the_field(tmp_path: Path) -> None:
    svc = scored_service()
    svc.prediction_summary = lambda q, response: {"ratio": 1 / q.x}
    async with serving(svc, tmp_path) as h:
        answer = await h.ask({"x": 0})
        events = h.events()
    assert answer.status == 200
    assert events[0]["prediction"] == {"error": "ZeroDivisionError: division by zero"}


def test_a_service_has_one_summary() -> None:
    svc = scored_service()
    with pytest.raises(ValueError, match="already has"):
        svc.log_prediction(lambda q, r: {})


# --- exception events ---------------------------------------------------------------------


def _raised(error: Exception) -> Exception:
    try:
        raise error
    except Exception as caught:
        return caught


def test_the_traceback_comes_once_per_distinct_error_and_period() -> None:
    sink = MemorySink()
    clock = FakeClock()
    exceptions = ExceptionEvents("svc", lambda e: sink.write([e]), traceback_interval=10,
                                 clock=clock)
    exceptions.record("model", "model_error", _raised(ValueError("a")), "r1")
    exceptions.record("model", "model_error", _raised(ValueError("b")), "r2")
    exceptions.record("model", "model_error", _raised(KeyError("k")), "r3")  # another type
    exceptions.record("features", "features_unavailable", _raised(ValueError("c")))  # stage
    clock.advance(9.9)
    exceptions.record("model", "model_error", _raised(ValueError("d")))
    clock.advance(0.1)
    exceptions.record("model", "model_error", _raised(ValueError("e")))
    events = sink.events
    assert [(e["stage"], e["error_type"], e["message"], e["traceback"] is not None)
            for e in events] == [
        ("model", "ValueError", "a", True),
        ("model", "ValueError", "b", False),
        ("model", "KeyError", "'k'", True),
        ("features", "ValueError", "c", True),
        ("model", "ValueError", "d", False),
        ("model", "ValueError", "e", True),
    ]
    assert "raise error" in events[0]["traceback"]
    assert events[-1]["suppressed_tracebacks"] == 2
    assert {e["kind"] for e in events} == {"exception"}
    assert (events[0]["category"], events[0]["request_id"], events[0]["v"]) == (
        "model_error", "r1", 1)


async def test_the_runtime_records_exceptions_beside_request_events(tmp_path: Path) -> None:
    async with serving(scored_service(), tmp_path) as h:
        h.runtime.record_exception("model", bt.Category.MODEL_ERROR, _raised(ValueError("x")),
                                   "r-7")
        await h.ask({"x": 1})
        exceptions, requests = h.events("exception"), h.events()
    assert len(requests) == 1
    assert [(e["category"], e["stage"], e["service"], e["request_id"]) for e in exceptions] == [
        ("model_error", "model", "scored", "r-7")]


async def test_a_failing_stage_is_an_exception_event_its_traceback_once(tmp_path: Path) -> None:
    svc = bt.Service("flaky", input=Query)

    @svc.stage(fallback=lambda q: 0, category=bt.Category.FEATURES_UNAVAILABLE)
    def lookup(q: Query) -> int:
        raise ConnectionError(f"store down for {q.x}")

    @svc.respond
    def respond(q: Query, lookup: int) -> dict[str, int]:
        return {"n": lookup}

    async with serving(svc, tmp_path) as h:
        for i in range(3):
            await h.ask({"x": i}, request_id=f"r-{i}")
        exceptions = h.events("exception")
    assert [(e["stage"], e["category"], e["error_type"], e["request_id"]) for e in exceptions] == [
        ("lookup", "features_unavailable", "ConnectionError", f"r-{i}") for i in range(3)]
    assert exceptions[0]["traceback"] is not None
    assert [e["traceback"] for e in exceptions[1:]] == [None, None]


async def test_event_loop_lag_is_measured(tmp_path: Path) -> None:
    async with serving(scored_service(), tmp_path) as h:
        await asyncio.sleep(0.3)
        time.sleep(0.3)  # noqa: ASYNC251 - on purpose: work holding the loop
        await asyncio.sleep(1.1)
        lag = h.sample("buttress_event_loop_lag_seconds")
    # a 250 ms timer was due somewhere in those 300 ms: it fired 50-300 ms late
    assert 0.05 <= lag < 1.0
