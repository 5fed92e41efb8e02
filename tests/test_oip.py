"""The Open Inference Protocol both ways: buttress serving ``/v2`` for its model stages, and
``RemoteModel`` calling an OIP server (a second buttress process, MLServer when installed).

In-process tests drive the real ASGI app through ``httpx.ASGITransport``; the slow ones start
real servers and talk to them over TCP, including with ``tritonclient``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import orjson
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

import buttress as bt
from buttress.http.app import create_app
from buttress.oip.codec import (
    TensorError,
    encode_request,
    encode_response,
    parse_request,
    parse_response,
)
from buttress.pipeline.runtime import Runtime
from buttress.runners import (
    RemoteError,
    RemoteModel,
    RemoteRunner,
    RemoteTimeout,
    RemoteUnavailable,
)
from tests.servers import RunningServer, metric_value, running_server
from tests.support import free_port, wait_for_port

FEATURES = 8
# scripts/test.sh installs MLServer into its own venv (never the project's) and points here
MLSERVER = Path(os.environ.get("BUTTRESS_MLSERVER", "/tmp/mlserver-venv/bin/mlserver"))


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(11).normal(size=(64, FEATURES))


@pytest.fixture(scope="module")
def model(rows: np.ndarray) -> HistGradientBoostingRegressor:
    target = rows @ np.linspace(-2.0, 2.0, FEATURES) + np.cos(rows[:, 1])
    return HistGradientBoostingRegressor(max_iter=15, random_state=0).fit(rows, target)


def infer_body(rows: np.ndarray, datatype: str = "FP64", **extra: Any) -> bytes:
    return orjson.dumps({"inputs": [{"name": "x", "shape": list(rows.shape),
                                     "datatype": datatype, "data": rows.ravel().tolist()}],
                         **extra})


def outputs(response: httpx.Response) -> np.ndarray:
    _, arrays = parse_response(response.content,
                               response.headers.get("inference-header-content-length"))
    return arrays[0]


# --- the codec ----------------------------------------------------------------------------


def test_request_round_trips_through_json(rows: np.ndarray) -> None:
    for dtype in (np.float64, np.float32, np.int64, np.bool_):
        batch = (rows[:5] * 10).astype(dtype)
        request, arrays = parse_request(encode_request(batch, input_name="in",
                                                       output_name="out"))
        assert request.inputs[0].name == "in"
        assert request.outputs is not None
        assert request.outputs[0].name == "out"
        assert arrays[0].dtype == dtype
        np.testing.assert_array_equal(arrays[0], batch)


def test_response_round_trips_through_the_binary_extension(rows: np.ndarray) -> None:
    first, second = rows[:3].astype(np.float32), np.arange(3, dtype=np.int64)
    body, header_length = encode_response(model_name="m", model_version="v1", request_id="r",
                                          outputs=[("a", first), ("b", second)], binary=True)
    assert header_length is not None
    response, arrays = parse_response(body, str(header_length))
    assert (response.model_name, response.model_version, response.id) == ("m", "v1", "r")
    assert [t.parameters["binary_data_size"] for t in response.outputs] == [3 * FEATURES * 4, 24]
    np.testing.assert_array_equal(arrays[0], first)
    np.testing.assert_array_equal(arrays[1], second)


def test_nested_json_data_is_accepted() -> None:
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",
                                     "data": [[1, 2], [3, 4]]}]})
    _, (array,) = parse_request(body)
    np.testing.assert_array_equal(array, [[1.0, 2.0], [3.0, 4.0]])


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "bad inference document"),
    (b'{"inputs": []}', "bad inference document at inputs"),
    (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}]}',
     "'BYTES' is not supported"),
    (b'{"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]}',
     "3 values do not fill shape [2, 2]"),
    (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": ["a", "b"]}]}',
     "data is not FP32"),
    (b'{"inputs": [{"name": "x", "shape": [-1, 2], "datatype": "FP32", "data": [1, 2]}]}',
     "negative size"),
    (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32"}]}',
     "neither data nor binary_data_size"),
])
def test_bad_documents_say_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(TensorError) as raised:
        parse_request(body)
    assert message in str(raised.value)


def test_binary_sizes_are_checked() -> None:
    header = b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", ' \
             b'"parameters": {"binary_data_size": 8}}]}'
    with pytest.raises(TensorError, match="do not hold shape"):
        parse_request(header + b"\0" * 4, str(len(header)))
    with pytest.raises(TensorError, match="belong to no tensor"):
        parse_request(header + b"\0" * 12, str(len(header)))
    with pytest.raises(TensorError, match="outside the body"):
        parse_request(header, str(len(header) + 1))


# --- buttress serving /v2, in process -------------------------------------------------------


class Rows(bt.Input):
    values: list[float]


def make_service(model: Any, *, timeout: str = "1s", batch: bt.Batch | None = None,
                 breaker: bt.Breaker | None = None) -> bt.Service:
    svc = bt.Service("oip", input=Rows)

    @svc.model(model=model, version="v2", timeout=timeout, fallback=-1.0, batch=batch,
               breaker=breaker or bt.Breaker())
    def regressor(rows: Rows) -> np.ndarray:
        return np.asarray([rows.values])

    @svc.respond
    def respond(rows: Rows, regressor: np.ndarray) -> dict[str, float]:
        return {"prediction": float(np.asarray(regressor).ravel()[0])}

    return svc


@asynccontextmanager
async def serving(svc: bt.Service, tmp_path: Path, *, start: bool = True,
                  **settings: Any) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    runtime = svc.build(bt.Settings(events_dir=str(tmp_path / "events"), **settings))
    app = create_app(runtime)
    if start:
        await runtime.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://buttress") as client:
            yield runtime, client
    finally:
        await runtime.stop()


def stalling(seconds: float) -> Any:
    def predict(batch: np.ndarray) -> np.ndarray:
        time.sleep(seconds)
        return batch.sum(axis=1)

    return predict


def failing_on_negative(model: HistGradientBoostingRegressor) -> Any:
    def predict(batch: np.ndarray) -> np.ndarray:
        if (batch[:, 0] < -100).any():
            raise ValueError("first feature below -100")
        return model.predict(batch)

    return predict


async def test_health_follows_the_runtime(model: Any, tmp_path: Path) -> None:
    async with serving(make_service(model), tmp_path, start=False) as (runtime, client):
        assert (await client.get("/v2/health/live")).json() == {"live": True}
        assert (await client.get("/v2/health/ready")).status_code == 503
        assert (await client.get("/v2/models/regressor/ready")).status_code == 503
        await runtime.start()
        ready = await client.get("/v2/health/ready")
        assert (ready.status_code, ready.json()) == (200, {"ready": True})
        assert (await client.get("/v2/models/regressor/ready")).json() == {
            "name": "regressor", "ready": True}
        runtime.draining = True
        assert (await client.get("/v2/health/ready")).status_code == 503
        server = (await client.get("/v2")).json()
        assert server["name"] == "buttress"
        assert "binary_tensor_data" in server["extensions"]


async def test_metadata_describes_the_model_stage(model: Any, tmp_path: Path) -> None:
    async with serving(make_service(model), tmp_path) as (_, client):
        metadata = (await client.get("/v2/models/regressor")).json()
        assert metadata == {
            "name": "regressor", "versions": ["v2"], "platform": "buttress",
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, FEATURES]}],
            "outputs": [{"name": "output-0", "datatype": "FP64", "shape": [-1]}],
        }
        assert (await client.get("/v2/models/regressor/versions/v2")).json() == metadata
        wrong = await client.get("/v2/models/regressor/versions/v9")
        assert (wrong.status_code, wrong.json()) == (
            404, {"error": "model 'regressor' has version 'v2', not 'v9'"})
        unknown = await client.get("/v2/models/respond")
        assert unknown.status_code == 404
        assert unknown.json() == {"error": "unknown model 'respond'; models: regressor"}


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize(("datatype", "dtype"), [("FP64", np.float64), ("FP32", np.float32)])
async def test_infer_gives_the_model_predictions(
        model: Any, rows: np.ndarray, tmp_path: Path, batched: bool, datatype: str,
        dtype: type[np.floating[Any]]) -> None:
    batch = bt.Batch(max_size=64, max_wait="2ms") if batched else None
    async with serving(make_service(model, batch=batch), tmp_path) as (_, client):
        for n in (1, 64):
            sent = rows[:n].astype(dtype)
            response = await client.post("/v2/models/regressor/infer",
                                         content=infer_body(sent, datatype, id="req-1"))
            assert response.status_code == 200, response.text
            document = response.json()
            assert document["model_name"] == "regressor"
            assert document["model_version"] == "v2"
            assert document["id"] == "req-1"
            assert document["outputs"][0]["shape"] == [n]
            np.testing.assert_array_equal(outputs(response), model.predict(sent))


async def test_v2_and_predict_rows_share_batches(model: Any, rows: np.ndarray,
                                                 tmp_path: Path) -> None:
    svc = make_service(model, batch=bt.Batch(max_size=64, max_wait="20ms", adaptive=False))
    async with serving(svc, tmp_path) as (runtime, client):
        v2 = [client.post("/v2/models/regressor/infer", content=infer_body(rows[i:i + 1]))
              for i in range(8)]
        predict = [runtime.answer(orjson.dumps({"values": rows[i].tolist()}), request_id=str(i))
                   for i in range(8, 16)]
        answers = await asyncio.gather(*v2, *predict)
        batcher = runtime.pipeline.stages["regressor"].batcher
        assert batcher is not None
        assert batcher.stats().batches == 1
        expected = model.predict(rows[:16])
        for i, response in enumerate(answers[:8]):
            np.testing.assert_array_equal(outputs(response), expected[i:i + 1])
        for i, answer in enumerate(answers[8:], start=8):
            assert orjson.loads(answer.body) == {"prediction": expected[i]}


async def test_batches_show_in_their_prometheus_metrics(model: Any, rows: np.ndarray,
                                                       tmp_path: Path) -> None:
    """Batch size, queue wait, queue depth and runner latency per model, as /metrics serves
    them: 12 concurrent requests make one batch of 12 rows, and the queue ends empty."""
    svc = make_service(model, batch=bt.Batch(max_size=64, max_wait="20ms", adaptive=False))
    async with serving(svc, tmp_path) as (runtime, client):
        batcher = runtime.pipeline.stages["regressor"].batcher
        assert batcher is not None
        before = batcher.stats()  # whatever start-up ran
        await asyncio.gather(*(runtime.answer(orjson.dumps({"values": rows[i].tolist()}),
                                              request_id=str(i)) for i in range(12)))
        after = batcher.stats()
        text = (await client.get("/metrics")).text
    assert (after.batches - before.batches, after.rows - before.rows) == (1, 12)

    def sample(name: str, **labels: str) -> float:
        return metric_value(text, name, model="regressor", **labels)

    assert sample("buttress_batch_size_rows_count") == after.batches
    assert sample("buttress_batch_size_rows_sum") == after.rows
    assert sample("buttress_batch_size_rows_bucket", le="8.0") == before.batches  # 12 > 8 rows
    assert sample("buttress_batch_queue_wait_seconds_count") == after.batches
    assert "buttress_batch_queue_rows{" in text
    assert sample("buttress_batch_queue_rows") == 0
    assert sample("buttress_model_latency_seconds_count", version="v2") == after.batches


async def test_binary_tensors_from_tritonclient_are_understood(
        model: Any, rows: np.ndarray, tmp_path: Path) -> None:
    http = pytest.importorskip("tritonclient.http")
    tensor = http.InferInput("INPUT0", [5, FEATURES], "FP32")
    tensor.set_data_from_numpy(rows[:5].astype(np.float32))  # binary by default
    body, json_size = http.InferenceServerClient.generate_request_body([tensor])
    async with serving(make_service(model), tmp_path) as (_, client):
        response = await client.post(
            "/v2/models/regressor/infer", content=body,
            headers={} if json_size is None else {"Inference-Header-Content-Length":
                                                  str(json_size)})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    result = http.InferResult.from_response_body(
        response.content, header_length=int(response.headers["inference-header-content-length"]))
    np.testing.assert_array_equal(result.as_numpy("output-0"),
                                  model.predict(rows[:5].astype(np.float32)))


@pytest.mark.parametrize(("document", "message"), [
    ({"inputs": [{"name": "x", "shape": [4], "datatype": "FP64", "data": [1, 2, 3, 4]}]},
     "takes a 2-D tensor [rows, features]"),
    ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
     f"takes rows of {FEATURES} features; got 3"),
    ({"inputs": [{"name": "x", "shape": [0, FEATURES], "datatype": "FP64", "data": []}]},
     "at least one row"),
    ({"inputs": [{"name": f"x{i}", "shape": [1, FEATURES], "datatype": "FP64",
                  "data": [0] * FEATURES} for i in range(2)]}, "got 2"),
    ({"inputs": [{"name": "x", "shape": [1, FEATURES], "datatype": "FP64",
                  "data": [0] * FEATURES}], "outputs": [{"name": "proba"}]},
     "has one output, 'output-0'"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}]},
     "not supported"),
])
async def test_bad_tensors_are_400_and_leave_the_breaker_alone(
        model: Any, tmp_path: Path, document: dict[str, Any], message: str) -> None:
    svc = make_service(model, breaker=bt.Breaker(consecutive_failures=1))
    async with serving(svc, tmp_path) as (runtime, client):
        for _ in range(3):
            response = await client.post("/v2/models/regressor/infer",
                                         content=orjson.dumps(document))
            assert response.status_code == 400
            assert message in response.json()["error"]
        breaker = runtime.pipeline.stages["regressor"].breaker
        assert breaker is not None
        assert breaker.state == "closed"


async def test_model_errors_are_500_and_open_the_breaker_shared_with_predict(
        model: Any, rows: np.ndarray, tmp_path: Path) -> None:
    svc = make_service(failing_on_negative(model),
                       breaker=bt.Breaker(consecutive_failures=2, open_for="1min"))
    async with serving(svc, tmp_path) as (runtime, client):
        bad = rows[:2].copy()
        bad[:, 0] = -1000.0
        for _ in range(2):
            response = await client.post("/v2/models/regressor/infer", content=infer_body(bad))
            assert response.status_code == 500
            assert response.json() == {"error": "model 'regressor' failed: ValueError: first "
                                                "feature below -100"}
        refused = await client.post("/v2/models/regressor/infer", content=infer_body(rows[:2]))
        assert refused.status_code == 503
        assert "circuit breaker open" in refused.json()["error"]
        answer = await runtime.answer(orjson.dumps({"values": rows[0].tolist()}),
                                      request_id="r")
        assert orjson.loads(answer.body) == {"prediction": -1.0}
        assert answer.context.fallback_categories == ["model_unavailable"]


async def test_a_batched_v2_call_counts_once_in_the_breaker(
        model: Any, rows: np.ndarray, tmp_path: Path) -> None:
    """With batching the batcher counts each batch; /v2 must not count the same call again."""
    svc = make_service(failing_on_negative(model), batch=bt.Batch(max_size=8, max_wait="1ms"),
                       breaker=bt.Breaker(consecutive_failures=2, open_for="1min"))
    async with serving(svc, tmp_path) as (runtime, client):
        breaker = runtime.pipeline.stages["regressor"].breaker
        assert breaker is not None
        bad = rows[:1].copy()
        bad[:, 0] = -1000.0
        first = await client.post("/v2/models/regressor/infer", content=infer_body(bad))
        assert first.status_code == 500
        assert breaker.state == "closed"  # one failed batch: one failure of the two allowed
        second = await client.post("/v2/models/regressor/infer", content=infer_body(bad))
        assert second.status_code == 500
        assert breaker.state == "open"


async def test_overrun_is_504_within_the_stage_timeout(rows: np.ndarray,
                                                       tmp_path: Path) -> None:
    async with serving(make_service(stalling(0.3), timeout="50ms"), tmp_path) as (_, client):
        started = time.perf_counter()
        response = await client.post("/v2/models/regressor/infer", content=infer_body(rows[:1]))
        elapsed = time.perf_counter() - started
        assert response.status_code == 504
        assert response.json() == {"error": "model 'regressor' did not answer within 50 ms"}
        assert elapsed < 0.25
        # the client's X-Deadline-Ms lowers it further, as on /predict
        response = await client.post("/v2/models/regressor/infer", content=infer_body(rows[:1]),
                                     headers={"X-Deadline-Ms": "10"})
        assert response.json() == {"error": "model 'regressor' did not answer within 10 ms"}


async def test_full_queue_is_503(rows: np.ndarray, tmp_path: Path) -> None:
    svc = make_service(stalling(0.2), batch=bt.Batch(max_size=1, max_queue=1, max_wait="1ms"))
    async with serving(svc, tmp_path, deadline=1.0) as (_, client):
        async def infer(i: int) -> httpx.Response:
            await asyncio.sleep(0.02 * i)  # in order: one running, one queued, one shed
            return await client.post("/v2/models/regressor/infer",
                                     content=infer_body(rows[i:i + 1]))

        statuses = [r.status_code for r in await asyncio.gather(*(infer(i) for i in range(3)))]
    assert statuses == [200, 200, 503]


async def test_body_over_the_limit_is_413(model: Any, rows: np.ndarray, tmp_path: Path) -> None:
    async with serving(make_service(model), tmp_path, max_body_bytes=512) as (_, client):
        response = await client.post("/v2/models/regressor/infer", content=infer_body(rows))
    assert response.status_code == 413
    assert response.json() == {"error": "body larger than 512 bytes"}


async def test_v2_calls_count_as_model_calls_not_as_requests(
        model: Any, rows: np.ndarray, tmp_path: Path) -> None:
    async with serving(make_service(model), tmp_path) as (runtime, client):
        for _ in range(3):
            await client.post("/v2/models/regressor/infer", content=infer_body(rows[:2]))
        registry = runtime.metrics.registry
        labels = {"service": "oip", "model": "regressor", "version": "v2"}
        assert registry.get_sample_value("buttress_model_latency_seconds_count", labels) == 3
        # the 200 series exists from the start (at 0, as Prometheus advises), and stays there
        assert registry.get_sample_value("buttress_requests_total",
                                         {"service": "oip", "status": "200"}) == 0


async def test_every_v2_inference_call_records_one_event(
        model: Any, rows: np.ndarray, tmp_path: Path) -> None:
    async with serving(make_service(failing_on_negative(model)), tmp_path) as (runtime, client):
        infer = "/v2/models/regressor/infer"
        calls = [
            (infer, infer_body(np.abs(rows[:2])), {"x-request-id": "v2-ok"}),
            (infer, b"{not json", {"x-request-id": "v2-bad"}),
            ("/v2/models/nope/infer", infer_body(rows[:1]), {"x-request-id": "v2-unknown"}),
            (infer, infer_body(rows[:1] - 1000), {"x-request-id": "v2-fails"}),
        ]
        for path, body, headers in calls:
            await client.post(path, content=body, headers=headers)
        runtime.events.flush()
    events = [event for file in (tmp_path / "events").glob("*.jsonl")
              for line in file.read_bytes().splitlines()
              if (event := orjson.loads(line))["kind"] == "request"]
    seen = {e["request_id"]: (e["route"], e["status"], e["error_category"], e["model_version"])
            for e in events}
    assert len(events) == len(calls)  # one each, and no /predict events among them
    assert seen == {
        "v2-ok": (infer, 200, None, "v2"),
        "v2-bad": (infer, 400, "input_invalid", ""),
        "v2-unknown": ("/v2/models/nope/infer", 404, "input_invalid", ""),
        "v2-fails": (infer, 500, "model_error", ""),
    }


# --- RemoteModel against real servers -------------------------------------------------------

SERVICE = '''
"""Served by the OIP tests in a second process: two model stages over the same rows."""

import time
from pathlib import Path

import joblib
import numpy as np

import buttress as bt

MODEL = joblib.load(Path(__file__).with_name("model.joblib"))


class Rows(bt.Input):
    values: list[float]


svc = bt.Service("oip-remote", input=Rows, example={"values": [0.5] * MODEL.n_features_in_})


@svc.model(model=MODEL, version="v3", timeout="1s", fallback=0.0,
           batch=bt.Batch(max_size=64, max_wait="2ms"))
def regressor(rows: Rows) -> np.ndarray:
    return np.asarray([rows.values])


def stall(rows: np.ndarray) -> np.ndarray:
    """Sleeps 0.5 s on rows whose first value is negative."""
    if rows[0, 0] < 0:
        time.sleep(0.5)
    return rows.sum(axis=1)


@svc.model(model=stall, version="v1", timeout="2s", fallback=0.0)
def slow(rows: Rows) -> np.ndarray:
    return np.asarray([rows.values])


@svc.respond
def respond(rows: Rows, regressor: np.ndarray, slow: np.ndarray) -> dict[str, float]:
    return {"prediction": float(regressor[0]), "sum": float(slow[0])}
'''


def write_service(directory: Path, model: Any) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, directory / "model.joblib")
    (directory / "oip_remote_service.py").write_text(SERVICE)
    return f"{directory / 'oip_remote_service.py'}:svc"


@pytest.fixture(scope="module")
def oip_server(tmp_path_factory: pytest.TempPathFactory,
               model: Any) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("oip-server")
    with running_server(write_service(root / "service", model), root / "run") as server:
        yield server


class CountingTransport(httpx.AsyncHTTPTransport):
    """The real transport, counting the requests that reach the network."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return await super().handle_async_request(request)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 64])
async def test_remote_runner_matches_the_model(oip_server: RunningServer, model: Any,
                                               rows: np.ndarray, n: int) -> None:
    runner = RemoteRunner(RemoteModel(oip_server.base_url, "regressor", timeout="2s"))
    pinned = RemoteRunner(RemoteModel(oip_server.base_url, "regressor", timeout="2s",
                                      version="v3", datatype="FP32"))
    try:
        np.testing.assert_array_equal(await runner.run(rows[:n]), model.predict(rows[:n]))
        np.testing.assert_array_equal(await pinned.run(rows[:n]),
                                      model.predict(rows[:n].astype(np.float32)))
        # 64 concurrent calls through one pool (16 kept-alive connections at most)
        many = await asyncio.gather(*(runner.run(rows[i:i + 1]) for i in range(n)))
        np.testing.assert_array_equal(np.concatenate(many), model.predict(rows[:n]))
    finally:
        await runner.aclose()
        await pinned.aclose()
    assert runner.breaker.state == "closed"


@pytest.mark.slow
async def test_remote_runner_errors_name_the_cause(oip_server: RunningServer,
                                                   rows: np.ndarray) -> None:
    missing = RemoteRunner(RemoteModel(oip_server.base_url, "nope", timeout="2s"))
    wrong = RemoteRunner(RemoteModel(oip_server.base_url, "regressor", timeout="2s"))
    try:
        with pytest.raises(RemoteError, match="answered 404: unknown model 'nope'"):
            await missing.run(rows[:1])
        with pytest.raises(RemoteError, match=r"answered 400: .* takes rows of 8 features"):
            await wrong.run(rows[:1, :3])
    finally:
        await missing.aclose()
        await wrong.aclose()


@pytest.mark.slow
async def test_remote_timeout_is_respected_and_counted(oip_server: RunningServer,
                                                       rows: np.ndarray) -> None:
    runner = RemoteRunner(RemoteModel(oip_server.base_url, "slow", timeout="50ms",
                                      breaker=bt.Breaker(consecutive_failures=1)))
    stalls = -np.abs(rows[:1])
    try:
        assert await runner.run(np.abs(rows[:1])) == pytest.approx(np.abs(rows[:1]).sum())
        started = time.perf_counter()
        with pytest.raises(RemoteTimeout, match="did not answer within 50 ms"):
            await runner.run(stalls)
        assert time.perf_counter() - started < 0.3
        assert runner.breaker.state == "open"
        with pytest.raises(RemoteUnavailable):
            await runner.run(np.abs(rows[:1]))
    finally:
        await runner.aclose()


@pytest.mark.slow
async def test_remote_down_opens_the_runners_breaker_and_calls_fail_fast(
        tmp_path: Path, model: Any, rows: np.ndarray) -> None:
    clock, transport = Clock(), CountingTransport()
    breaker = bt.Breaker(consecutive_failures=3, open_for="5s")
    with running_server(write_service(tmp_path / "service", model), tmp_path / "run") as server:
        spec = RemoteModel(server.base_url, "regressor", timeout="1s", breaker=breaker)
        runner = RemoteRunner(spec, clock=clock, transport=transport)
        np.testing.assert_array_equal(await runner.run(rows[:2]), model.predict(rows[:2]))
        server.stop()
    try:
        for _ in range(3):
            with pytest.raises(RemoteError, match="ConnectError"):
                await runner.run(rows[:2])
        assert runner.breaker.state == "open"
        assert transport.requests == 4
        started = time.perf_counter()
        for _ in range(100):
            with pytest.raises(RemoteUnavailable, match="circuit breaker open"):
                await runner.run(rows[:2])
        assert time.perf_counter() - started < 0.05  # 100 refusals, no network
        assert transport.requests == 4
        clock.now += 5.0  # half-open: one probe reaches the network, fails, reopens
        with pytest.raises(RemoteError):
            await runner.run(rows[:2])
        assert transport.requests == 5
        assert runner.breaker.state == "open"
    finally:
        await runner.aclose()


def remote_service(url: str, **model: Any) -> bt.Service:
    return make_service(RemoteModel(url, "regressor", **model))


@pytest.mark.slow
async def test_a_service_can_use_a_remote_model(oip_server: RunningServer, model: Any,
                                                rows: np.ndarray, tmp_path: Path) -> None:
    svc = remote_service(oip_server.base_url, timeout="200ms")
    async with serving(svc, tmp_path) as (runtime, _):
        for i in range(3):
            answer = await runtime.answer(orjson.dumps({"values": rows[i].tolist()}),
                                          request_id=str(i))
            assert orjson.loads(answer.body) == {"prediction": model.predict(rows[i:i + 1])[0]}
            assert answer.context.fallbacks == []


async def test_a_dead_remote_model_falls_back_then_sheds(rows: np.ndarray,
                                                        tmp_path: Path) -> None:
    svc = remote_service(f"http://127.0.0.1:{free_port()}", timeout="200ms",
                         breaker=bt.Breaker(consecutive_failures=2, open_for="1min"))
    async with serving(svc, tmp_path) as (runtime, _):
        categories = []
        for i in range(4):
            answer = await runtime.answer(orjson.dumps({"values": rows[i].tolist()}),
                                          request_id=str(i))
            assert orjson.loads(answer.body) == {"prediction": -1.0}
            categories += answer.context.fallback_categories
    assert categories == ["model_error", "model_error", "model_unavailable", "model_unavailable"]


# --- third-party clients and servers --------------------------------------------------------


@pytest.mark.slow
def test_tritonclient_works_against_buttress(oip_server: RunningServer, model: Any,
                                             rows: np.ndarray) -> None:
    http = pytest.importorskip("tritonclient.http")
    utils = pytest.importorskip("tritonclient.utils")
    client = http.InferenceServerClient(url=f"127.0.0.1:{oip_server.port}")
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("regressor")
        metadata = client.get_model_metadata("regressor")
        assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64",
                                       "shape": [-1, FEATURES]}]
        assert metadata["versions"] == ["v3"]

        fp64 = http.InferInput("input-0", [64, FEATURES], "FP64")
        fp64.set_data_from_numpy(rows)  # binary tensor data, binary outputs
        result = client.infer("regressor", [fp64])
        np.testing.assert_array_equal(result.as_numpy("output-0"), model.predict(rows))

        fp32 = http.InferInput("input-0", [3, FEATURES], "FP32")
        fp32.set_data_from_numpy(rows[:3].astype(np.float32), binary_data=False)
        result = client.infer("regressor", [fp32], model_version="v3",
                              outputs=[http.InferRequestedOutput("output-0", binary_data=False)])
        np.testing.assert_array_equal(result.as_numpy("output-0"),
                                      model.predict(rows[:3].astype(np.float32)))
        assert result.get_response()["model_version"] == "v3"

        with pytest.raises(utils.InferenceServerException, match="unknown model 'nope'"):
            client.infer("nope", [fp64])
    finally:
        client.close()


@pytest.fixture
def mlserver(tmp_path: Path, model: Any) -> Iterator[str]:
    """MLServer (its own venv) serving the model as ``regressor`` version ``v1``."""
    if not MLSERVER.exists():
        pytest.skip(f"MLServer is not installed at {MLSERVER} (python -m venv "
                    "/tmp/mlserver-venv && /tmp/mlserver-venv/bin/pip install mlserver "
                    "mlserver-sklearn)")
    model_dir = tmp_path / "models" / "regressor"
    model_dir.mkdir(parents=True)
    joblib.dump(model, model_dir / "model.joblib")
    (model_dir / "model-settings.json").write_text(json.dumps({
        "name": "regressor", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"}}))
    port = free_port()
    (tmp_path / "models" / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(),
        "metrics_port": free_port(), "parallel_workers": 0}))
    log = (tmp_path / "mlserver.log").open("wb")
    process = subprocess.Popen([str(MLSERVER), "start", str(tmp_path / "models")],
                               cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"},
                               start_new_session=True)
    try:
        wait_for_port(port, timeout=60)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/v2/models/regressor/ready").status_code != 200:
            assert time.monotonic() < deadline, (tmp_path / "mlserver.log").read_text()
            time.sleep(0.1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


@pytest.mark.slow
async def test_remote_runner_calls_mlserver(mlserver: str, model: Any,
                                            rows: np.ndarray) -> None:
    runner = RemoteRunner(RemoteModel(mlserver, "regressor", timeout="2s", version="v1"))
    try:
        for n in (1, 64):
            predictions = await runner.run(rows[:n])  # MLServer answers [n, 1]: now [n]
            np.testing.assert_array_equal(predictions, model.predict(rows[:n]))
    finally:
        await runner.aclose()
