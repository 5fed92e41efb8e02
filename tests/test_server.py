"""The real server: ``buttress serve`` in a subprocess, spoken to over HTTP.

One demo server and one fault-injection server are shared by the tests of this module that
only read their own answers (metric checks compare before/after a request); tests that stop
the server, or need exact totals, start their own.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from buttress.observability.metrics import FLUSH_INTERVAL
from tests.servers import (
    DEMO,
    FAULTY,
    RunningServer,
    clean_environment,
    cli_command,
    metric_value,
    running_server,
)
from tests.services import faulty

pytestmark = pytest.mark.slow

ORDER: dict[str, Any] = {
    "order_id": "o-1",
    "user": {"id": 42, "app_version": "5.12.0"},
    "sub_orders": [{"sub_order_id": "so-1", "product_id": 501, "price": 499.0,
                    "margin": 0.3, "quantity": 1}],
}
DEMO_MAX_BODY = 4096
ADMIN_TOKEN = "test-admin-token"
VIOLATIONS = "buttress_input_contract_violations_total"


def order(**sub_order: Any) -> dict[str, Any]:
    """The example order with its one sub-order changed (a key set to None is removed)."""
    sub = {**ORDER["sub_orders"][0], **sub_order}
    return {**ORDER, "sub_orders": [{k: v for k, v in sub.items() if v is not None}]}


def fallbacks(response: httpx.Response) -> list[str]:
    header = response.headers.get("x-fallback", "")
    return header.split(",") if header else []


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {"BUTTRESS_MAX_BODY_BYTES": str(DEMO_MAX_BODY), "BUTTRESS_ADMIN_TOKEN": ADMIN_TOKEN}
    with running_server(DEMO, tmp_path_factory.mktemp("demo"), env=env) as server:
        yield server


@pytest.fixture(scope="module")
def client(demo: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=demo.base_url, timeout=10) as http:
        yield http


@pytest.fixture(scope="module")
def faulty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The fault-injection service, configured through a ``--config`` file."""
    workdir = tmp_path_factory.mktemp("faulty")
    (workdir / "settings.toml").write_text(
        f'deadline = "400ms"\nmax_deadline = "1s"\nmodel_threads = 4\n'
        f'admin_token = "{ADMIN_TOKEN}"\n')
    with running_server(FAULTY, workdir, args=["--config", "settings.toml"]) as server:
        yield server


@pytest.fixture(scope="module")
def faulty_client(faulty_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=faulty_server.base_url, timeout=10) as http:
        yield http


def timed_post(http: httpx.Client, body: dict[str, Any], **headers: str) -> tuple[
        httpx.Response, float]:
    started = time.perf_counter()
    response = http.post("/predict", json=body, headers=headers)
    return response, time.perf_counter() - started


# --- the demo contract ------------------------------------------------------------------------


def test_valid_request_gets_the_demo_contract(client: httpx.Client) -> None:
    response = client.post("/predict", json=ORDER)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"order_id", "discounts"}
    assert body["order_id"] == "o-1"
    [discount] = body["discounts"]
    assert set(discount) == {"sub_order_id", "discount_pct"}
    assert discount["sub_order_id"] == "so-1"
    assert isinstance(discount["discount_pct"], float)
    assert 0.0 < discount["discount_pct"] <= 30.0
    assert response.headers["content-type"] == "application/json"
    assert len(response.headers["x-request-id"]) >= 16
    assert response.headers["x-model-version"] == "v1"
    assert "x-fallback" not in response.headers


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["model_version"] == "v1"


def test_renamed_key_is_used_and_counted(demo: RunningServer, client: httpx.Client) -> None:
    labels = {"field": "sub_orders[].seller_margin", "kind": "renamed", "service": "discount"}
    before = metric_value(demo.metrics(), VIOLATIONS, **labels)
    renamed = client.post("/predict", json=order(margin=None, seller_margin=0.3))
    assert renamed.status_code == 200
    assert "x-fallback" not in renamed.headers  # a rename is absorbed, not a fallback
    named = client.post("/predict", json=order(margin=0.3)).json()
    no_margin = client.post("/predict", json=order(margin=0.0)).json()
    assert renamed.json() == named != no_margin
    assert metric_value(demo.metrics(), VIOLATIONS, **labels) == before + 1


def test_wrong_typed_field_takes_its_default(demo: RunningServer, client: httpx.Client) -> None:
    labels = {"field": "sub_orders[].margin", "kind": "defaulted", "service": "discount"}
    before = metric_value(demo.metrics(), VIOLATIONS, **labels)
    response = client.post("/predict", json=order(margin="eighteen percent"))
    assert response.status_code == 200
    assert fallbacks(response) == ["input_contract"]
    default = client.post("/predict", json=order(margin=0.0)).json()
    given = client.post("/predict", json=order(margin=0.3)).json()
    assert response.json() == default != given
    assert metric_value(demo.metrics(), VIOLATIONS, **labels) == before + 1
    assert metric_value(demo.metrics(), "buttress_fallbacks_total", stage="input",
                        category="input_contract") >= 1


def test_missing_required_fields_are_all_listed(client: httpx.Client) -> None:
    body = {"user": {"app_version": "5.12.0"},
            "sub_orders": [{"sub_order_id": "so-1", "price": "cheap"}]}
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["category"] == "input_invalid"
    fields = {f["field"]: f["kind"] for f in error["fields"]}
    assert fields == {"order_id": "missing", "user.id": "missing",
                      "sub_orders[0].product_id": "missing", "sub_orders[0].price": "invalid"}


def test_malformed_json_is_400(client: httpx.Client) -> None:
    response = client.post("/predict", content=b'{"order_id": "o-1", "user": {',
                           headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["category"] == "input_invalid"
    assert "malformed JSON" in response.json()["error"]["message"]


def test_json_nested_too_deep_is_400(client: httpx.Client) -> None:
    deep = b'{"order_id": "o-1", "x": ' + b"[" * 100 + b"]" * 100 + b"}"
    response = client.post("/predict", content=deep)
    assert response.status_code == 400
    assert "nesting" in response.json()["error"]["message"]


def test_non_object_body_is_422(client: httpx.Client) -> None:
    response = client.post("/predict", content=b"[1, 2, 3]")
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["received"] == "array"


def test_oversized_body_with_content_length_is_413(client: httpx.Client) -> None:
    padded = {**ORDER, "padding": "x" * DEMO_MAX_BODY}
    response = client.post("/predict", content=orjson.dumps(padded))
    assert response.status_code == 413
    assert response.json()["error"]["category"] == "input_invalid"
    small = {**ORDER, "padding": "x" * (DEMO_MAX_BODY // 2)}
    assert client.post("/predict", content=orjson.dumps(small)).status_code == 200


def test_oversized_chunked_body_is_413(client: httpx.Client) -> None:
    def chunks(document: dict[str, Any], size: int = 1000) -> Iterator[bytes]:
        raw = orjson.dumps(document)
        for start in range(0, len(raw), size):
            yield raw[start:start + size]

    padded = {**ORDER, "padding": "x" * DEMO_MAX_BODY}
    response = client.post("/predict", content=chunks(padded))
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    small = {**ORDER, "padding": "x" * (DEMO_MAX_BODY // 2)}
    assert client.post("/predict", content=chunks(small)).status_code == 200


def test_model_error_serves_the_default_prediction(client: httpx.Client) -> None:
    failing = {**order(), "order_id": "fail-model-7",
               "sub_orders": [order()["sub_orders"][0], {**order()["sub_orders"][0],
                                                          "sub_order_id": "so-2"}]}
    response = client.post("/predict", json=failing)
    assert response.status_code == 200
    assert fallbacks(response) == ["model_error"]
    assert response.json() == {"order_id": "fail-model-7", "discounts": [
        {"sub_order_id": "so-1", "discount_pct": 0.0},
        {"sub_order_id": "so-2", "discount_pct": 0.0}]}


def test_request_id_kept_when_well_formed(client: httpx.Client) -> None:
    given = "req-2026.11:abc_DEF"
    response = client.post("/predict", json=ORDER, headers={"X-Request-Id": given})
    assert response.headers["x-request-id"] == given


@pytest.mark.parametrize("bad_id", [b"has spaces", b"x" * 129, b"semi;colon", "ünï".encode()],
                         ids=["spaces", "too-long", "semicolon", "utf8"])
def test_request_id_replaced_when_malformed(client: httpx.Client, bad_id: bytes) -> None:
    response = client.post("/predict", json=ORDER, headers=[(b"X-Request-Id", bad_id)])
    replaced = response.headers["x-request-id"]
    assert replaced.encode() != bad_id
    assert replaced.isalnum()
    assert len(replaced) >= 16


def test_deadline_header_of_0ms_times_the_model_out(client: httpx.Client) -> None:
    # 0, not 1: the demo's model answers a lone row in ~0.7 ms, so 1 ms is sometimes enough
    response, elapsed = timed_post(client, ORDER, **{"X-Deadline-Ms": "0"})
    assert response.status_code == 200
    assert "model_timeout" in fallbacks(response)
    assert response.json()["discounts"] == [{"sub_order_id": "so-1", "discount_pct": 0.0}]
    assert elapsed < 0.5


@pytest.mark.parametrize("header", ["soon", "inf", "NaN", "-5", "1e400"])
def test_a_malformed_deadline_header_is_a_400(client: httpx.Client, header: str) -> None:
    response = client.post("/predict", json=ORDER, headers={"X-Deadline-Ms": header})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["category"] == "input_invalid"
    assert "X-Deadline-Ms" in error["message"]


@pytest.mark.parametrize("price", [b"NaN", b"-Infinity", b"1e400"])
def test_a_non_finite_price_is_a_422_naming_it(client: httpx.Client, price: bytes) -> None:
    body = orjson.dumps(ORDER).replace(b'"price":499.0', b'"price":' + price)
    assert body != orjson.dumps(ORDER)
    response = client.post("/predict", content=body)
    assert response.status_code == 422, response.text  # was a 200 with x-fallback: internal
    [field] = response.json()["error"]["fields"]
    assert (field["field"], field["kind"]) == ("sub_orders[0].price", "invalid")


def test_get_on_predict_is_405(client: httpx.Client) -> None:
    response = client.get("/predict")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_admin_requires_the_bearer_token(client: httpx.Client) -> None:
    assert client.get("/admin/status").status_code == 401
    wrong = client.get("/admin/status", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    status = client.get("/admin/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert status.status_code == 200
    assert status.json()["service"] == "discount"
    assert status.json()["breakers"]["discount_model"] == "closed"


def test_admin_bodies_are_capped_like_predict_bodies(client: httpx.Client) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    huge = b'{"limit": ' + b" " * DEMO_MAX_BODY + b"1}"
    for path in ("/admin/guardrails/discount_value_per_minute", "/admin/cache/invalidate"):
        response = client.post(path, content=huge, headers=admin)
        assert response.status_code == 413, path
        assert response.json()["error"]["category"] == "input_invalid"
    small = client.post("/admin/guardrails/discount_value_per_minute", json={"limit": "x"},
                        headers=admin)
    assert small.status_code == 400  # read, parsed and refused for what it says


def test_promtool_accepts_single_process_metrics(client: httpx.Client) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    text = client.get("/metrics").text
    assert "buttress_requests_total" in text
    check = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=30, check=False)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


# --- faults: model, stages, deadlines, breaker ------------------------------------------------


def test_model_raising_gives_model_error(faulty_client: httpx.Client) -> None:
    response = faulty_client.post("/predict", json={"id": "r1", "mode": "model-raise"})
    assert response.status_code == 200
    assert response.json()["score"] == -1.0
    assert fallbacks(response) == ["model_error"]
    assert response.headers["x-model-version"] == "v1,v7"


def test_model_past_its_timeout_gives_model_timeout(faulty_client: httpx.Client) -> None:
    response, elapsed = timed_post(faulty_client, {"id": "t1", "model_sleep_ms": 2000})
    assert response.status_code == 200
    assert response.json()["score"] == -1.0
    assert fallbacks(response) == ["model_timeout"]
    # the model's own timeout (150 ms) cut it, well before the 400 ms request deadline
    assert faulty.SCORER_TIMEOUT <= elapsed < faulty.SCORER_TIMEOUT + 0.2


def test_stage_without_fallback_fails_the_request_with_503(
        faulty_client: httpx.Client) -> None:
    response = faulty_client.post("/predict", json={"id": "s1", "mode": "stage-fail"})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["category"] == "internal"
    assert "'gate'" in error["message"]
    assert error["fields"] == []


def test_deadline_header_lowers_the_deadline(faulty_client: httpx.Client) -> None:
    response, elapsed = timed_post(faulty_client, {"id": "d1", "sleep_ms": 3000},
                                   **{"X-Deadline-Ms": "100"})
    assert response.status_code == 200
    assert response.json()["waited"] == -1.0
    assert fallbacks(response) == ["features_unavailable"]
    assert 0.1 <= elapsed < 0.35  # the configured deadline would have been 0.4 s


def test_configured_deadline_applies_without_header(faulty_client: httpx.Client) -> None:
    response, elapsed = timed_post(faulty_client, {"id": "d2", "sleep_ms": 3000})
    assert fallbacks(response) == ["features_unavailable"]
    assert 0.4 <= elapsed < 0.9


def test_deadline_header_is_capped_by_max_deadline(faulty_client: httpx.Client) -> None:
    response, elapsed = timed_post(faulty_client, {"id": "d3", "sleep_ms": 3000},
                                   **{"X-Deadline-Ms": "60000"})
    assert fallbacks(response) == ["features_unavailable"]
    assert 1.0 <= elapsed < 1.6  # max_deadline = 1 s, not the 60 s asked for


def test_breaker_opens_then_closes_after_recovery(
        faulty_server: RunningServer, faulty_client: httpx.Client) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def breaker_state() -> str:
        status = faulty_client.get("/admin/status", headers=admin).json()
        return str(status["breakers"]["guarded"])

    def open_gauge() -> float:
        return metric_value(faulty_server.metrics(), "buttress_breaker_open", stage="guarded")

    for attempt in range(faulty.GUARDED_FAILURES):
        response, elapsed = timed_post(faulty_client, {"id": f"b{attempt}", "mode": "trip"})
        assert fallbacks(response) == ["model_error"]
        assert elapsed >= faulty.TRIP_DELAY  # the model was called
    assert breaker_state() == "open"
    assert open_gauge() == 1
    opened = time.monotonic()

    # Open: refused at once, without calling the model (which would take 200 ms to fail).
    refused, elapsed = timed_post(faulty_client, {"id": "b-open", "mode": "trip"})
    assert fallbacks(refused) == ["model_unavailable"]
    assert refused.json()["guarded"] == -1.0
    assert elapsed < faulty.TRIP_DELAY / 2
    healthy = faulty_client.post("/predict", json={"id": "b-ok"})
    assert fallbacks(healthy) == ["model_unavailable"]

    # After open_for: one failing probe opens it again...
    time.sleep(max(0.0, faulty.GUARDED_OPEN_FOR - (time.monotonic() - opened)) + 0.05)
    probe, elapsed = timed_post(faulty_client, {"id": "b-probe", "mode": "trip"})
    assert fallbacks(probe) == ["model_error"]
    assert elapsed >= faulty.TRIP_DELAY
    reopened = time.monotonic()
    assert fallbacks(faulty_client.post("/predict", json={"id": "b-ok2"})) == [
        "model_unavailable"]

    # ...and a successful probe closes it.
    time.sleep(max(0.0, faulty.GUARDED_OPEN_FOR - (time.monotonic() - reopened)) + 0.05)
    recovered = faulty_client.post("/predict", json={"id": "b-ok3"})
    assert recovered.status_code == 200
    assert "x-fallback" not in recovered.headers
    assert recovered.json()["guarded"] == 2.0
    assert breaker_state() == "closed"
    assert open_gauge() == 0


# --- shutdown and events ----------------------------------------------------------------------


async def test_readyz_turns_503_while_draining(tmp_path: Path) -> None:
    """In process: SIGTERM's handler sets ``draining``; /healthz stays alive meanwhile."""
    from buttress.config import Settings
    from buttress.http import create_app

    runtime = faulty.svc.build(Settings(events_dir=str(tmp_path)))
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://buttress") as http:
        assert (await http.get("/readyz")).json() == {"status": "starting"}
        await runtime.start()
        assert (await http.get("/readyz")).status_code == 200
        runtime.draining = True
        draining = await http.get("/readyz")
        assert (draining.status_code, draining.json()) == (503, {"status": "draining"})
        assert (await http.get("/healthz")).status_code == 200
        await runtime.stop()


async def test_sigterm_lets_requests_in_flight_finish(tmp_path: Path) -> None:
    count, sleep_ms = 6, 500
    env = {"BUTTRESS_MAX_DEADLINE": "3s", "BUTTRESS_DEADLINE": "3s"}
    with running_server(FAULTY, tmp_path, env=env) as server:
        limits = httpx.Limits(max_connections=count + 2)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10,
                                     limits=limits) as http:

            async def slow(i: int) -> tuple[httpx.Response, float]:
                response = await http.post("/predict", json={"id": "slow", "sleep_ms": sleep_ms},
                                           headers={"X-Request-Id": f"slow-{i}"})
                return response, time.monotonic()

            tasks = [asyncio.create_task(slow(i)) for i in range(count)]
            poll_until = time.monotonic() + 5
            while True:  # all requests are inside the service now
                metrics = (await http.get("/metrics")).text
                if metric_value(metrics, "buttress_in_flight_requests") == count:
                    break
                assert time.monotonic() < poll_until, "requests never got in flight"
                await asyncio.sleep(0.01)
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            answers = await asyncio.gather(*tasks)
        exit_code = await asyncio.to_thread(server.stop)
    assert exit_code == 0, server.output()
    for response, finished in answers:
        assert response.status_code == 200
        assert "x-fallback" not in response.headers
        assert response.json()["waited"] == sleep_ms
        assert finished > signalled  # they really were in flight when SIGTERM arrived
    events = server.events()
    assert sorted(e["request_id"] for e in events) == sorted(f"slow-{i}" for i in range(count))


def test_every_request_writes_exactly_one_event(tmp_path: Path) -> None:
    max_body = 1024
    big = orjson.dumps({"id": "x", "padding": "x" * max_body})
    sent: dict[str, int] = {}
    with running_server(FAULTY, tmp_path,
                        env={"BUTTRESS_MAX_BODY_BYTES": str(max_body)}) as server, \
            httpx.Client(base_url=server.base_url, timeout=10) as http:

        def send(request_id: str, expected: int, **kwargs: Any) -> None:
            response = http.post("/predict", headers={"X-Request-Id": request_id}, **kwargs)
            assert response.status_code == expected, response.text
            assert response.headers["x-request-id"] == request_id
            sent[request_id] = expected

        send("ok", 200, json={"id": "ok"})
        send("model-raise", 200, json={"id": "m", "mode": "model-raise"})
        send("renamed-unknown", 200, json={"id": "u", "surprise": 1})
        send("malformed", 400, content=b"{nope")
        send("too-deep", 400, content=b"[" * 200 + b"]" * 200)
        send("too-large", 413, content=big)
        send("too-large-chunked", 413, content=iter([big[:600], big[600:]]))
        send("missing", 422, json={"mode": "ok"})
        send("not-an-object", 422, content=b'"just a string"')
        send("stage-fail", 503, json={"id": "s", "mode": "stage-fail"})
        wrong_method = http.get("/predict", headers={"X-Request-Id": "get"})
        assert wrong_method.status_code == 405
        sent["get"] = 405
        assert server.stop() == 0, server.output()

    events = server.events()
    ids = collections.Counter(e["request_id"] for e in events)
    assert ids == collections.Counter(sent.keys()), "expected exactly one event per request"
    by_id = {e["request_id"]: e for e in events}
    for request_id, status in sent.items():
        assert by_id[request_id]["status"] == status
        assert by_id[request_id]["service"] == "faulty"
    assert by_id["model-raise"]["fallbacks"] == ["model_error"]
    assert by_id["renamed-unknown"]["violations"][0]["kind"] == "unknown_key"
    assert by_id["stage-fail"]["error_category"] == "internal"
    assert by_id["stage-fail"]["error_stage"] == "gate"
    assert by_id["missing"]["error_category"] == "input_invalid"
    assert by_id["ok"]["error_category"] is None


# --- several workers --------------------------------------------------------------------------


def _write_stale_multiprocess_file(directory: Path) -> None:
    """A counter file left by an earlier run: 1000 requests that this run never served."""
    directory.mkdir(parents=True)
    script = ("from prometheus_client import Counter\n"
              "c = Counter('buttress_requests', 'stale', ['service', 'status'])\n"
              "c.labels('discount', '200').inc(1000)\n")
    env = {**clean_environment(directory), "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30, env=env)
    assert list(directory.glob("counter_*.db"))


def _pids_in_events(events_dir: Path) -> set[str]:
    # events-<time>-<pid>-<seq>.jsonl
    return {p.stem.split("-")[2] for p in events_dir.glob("events-*.jsonl")
            if p.stat().st_size}


def test_two_workers_share_one_metrics_scrape(tmp_path: Path) -> None:
    stale_dir = tmp_path / "prometheus"
    _write_stale_multiprocess_file(stale_dir)
    stale_files = set(stale_dir.iterdir())
    # Workers rebuild their settings from the environment the parent exports: a non-default
    # duration must survive that trip (it used to crash every worker in a restart loop).
    (tmp_path / "workers.toml").write_text('deadline = "300ms"\n')
    args = ["--workers", "2", "--config", "workers.toml"]
    with running_server(DEMO, tmp_path, args=args, ready_timeout=30) as server:
        assert not stale_files & set(stale_dir.iterdir()), "stale files were not wiped"

        def one_request(_: int) -> int:
            # A fresh connection each time, so the kernel spreads them over both workers.
            return httpx.post(f"{server.base_url}/predict", json=ORDER, timeout=10).status_code

        sent = 0
        with ThreadPoolExecutor(8) as pool:
            for _batch in range(15):
                statuses = list(pool.map(one_request, range(24)))
                assert statuses == [200] * len(statuses)
                sent += len(statuses)
                give_up = time.monotonic() + 0.6  # events are flushed every 0.2 s
                while (len(_pids_in_events(server.events_dir)) < 2
                       and time.monotonic() < give_up):
                    time.sleep(0.05)
                if len(_pids_in_events(server.events_dir)) == 2:
                    break
        assert len(_pids_in_events(server.events_dir)) == 2, "one worker served everything"

        # whichever worker answers, it reports both; the other's tally arrives within
        # FLUSH_INTERVAL (requests are counted in plain numbers, moved in bulk)
        give_up = time.monotonic() + 3 * FLUSH_INTERVAL
        while True:
            text = server.metrics()
            if (metric_value(text, "buttress_requests_total", service="discount") == sent
                    or time.monotonic() > give_up):
                break
            time.sleep(0.1)
        for _scrape in range(3):
            text = server.metrics()
            assert metric_value(text, "buttress_requests_total", service="discount") == sent
            assert metric_value(text, "buttress_requests_total", status="200") == sent
        assert server.stop() == 0, server.output()

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    check = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=30, check=False)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


# --- command-line errors ----------------------------------------------------------------------


def _serve_fails(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``buttress serve`` expecting a one-line error and exit code 2; return the line."""
    result = subprocess.run(cli_command("serve", *args), cwd=tmp_path, capture_output=True,
                            env=clean_environment(tmp_path, env), timeout=60, check=False)
    stderr = result.stderr.decode().strip()
    assert result.returncode == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("buttress: error: ")
    return lines[0]


def test_cli_nonexistent_target_file(tmp_path: Path) -> None:
    line = _serve_fails(tmp_path, "no/such/file.py:svc")
    assert "no/such/file.py" in line
    assert "does not exist" in line


def test_cli_target_without_the_attribute(tmp_path: Path) -> None:
    line = _serve_fails(tmp_path, FAULTY.replace(":svc", ":missing_service"))
    assert "has no attribute 'missing_service'" in line


def test_cli_target_that_is_not_a_service(tmp_path: Path) -> None:
    line = _serve_fails(tmp_path, FAULTY.replace(":svc", ":Probe"))
    assert "Probe" in line
    assert "not a buttress Service" in line
    line = _serve_fails(tmp_path, FAULTY.replace(":svc", ":SCORER_TIMEOUT"))
    assert "is a float, not a buttress Service" in line


def test_cli_target_module_that_does_not_import(tmp_path: Path) -> None:
    line = _serve_fails(tmp_path, "no_such_module_here:svc")
    assert "no_such_module_here" in line


def test_cli_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _serve_fails(tmp_path, FAULTY, "--port", str(port))
    assert f"port {port}" in line
    assert "in use" in line


def test_cli_bad_environment_value_names_the_key(tmp_path: Path) -> None:
    line = _serve_fails(tmp_path, FAULTY, env={"BUTTRESS_DEADLINE": "abc"})
    assert "'deadline'" in line
    assert "BUTTRESS_DEADLINE" in line
    assert "abc" in line


def test_cli_unknown_config_key_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('deadline = "1s"\ndeadlien = "2s"\n')
    line = _serve_fails(tmp_path, FAULTY, "--config", "bad.toml")
    assert "'deadlien'" in line


def test_cli_bad_config_value_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "buttress.toml").write_text('max_deadline = "forever"\n')  # found in cwd
    line = _serve_fails(tmp_path, FAULTY)
    assert "'max_deadline'" in line


def test_cli_missing_config_file(tmp_path: Path) -> None:
    line = _serve_fails(tmp_path, FAULTY, "--config", "absent.toml")
    assert "absent.toml" in line
