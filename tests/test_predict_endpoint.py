"""``/predict``'s transport in process, through the real ASGI app (``httpx.ASGITransport``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson

from buttress.config import Settings
from buttress.http import create_app
from buttress.http.body import READ_TIMED_OUT
from buttress.observability.events import MemorySink
from tests.services import faulty
from tests.support import started


async def test_a_wrong_method_is_a_recorded_405(tmp_path: Path) -> None:
    runtime_sink = MemorySink()
    async with started(faulty.svc, Settings(events_dir=str(tmp_path))) as runtime:
        runtime.events.sinks.append(runtime_sink)
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://buttress") as http:
            response = await http.get("/predict", headers={"X-Request-Id": "get-1"})
        registry = runtime.metrics.registry
        counted = registry.get_sample_value(
            "buttress_requests_total", {"service": "faulty", "status": "405"})
        runtime.events.flush()
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["category"] == "input_invalid"
    assert counted == 1
    [event] = [e for e in runtime_sink.events if e["request_id"] == "get-1"]
    assert (event["status"], event["route"], event["error_category"]) == (
        405, "/predict", "input_invalid")
    assert response.headers["x-request-id"] == "get-1"


async def test_a_body_the_server_stopped_waiting_for_is_a_recorded_408(tmp_path: Path) -> None:
    """What the app does when the connection's read deadline cut the body short (the server
    side is in tests/test_connections.py)."""
    sink = MemorySink()
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": "POST", "path": "/predict",
             "headers": [(b"content-length", b"100"), (b"x-request-id", b"slow-1")],
             "extensions": {READ_TIMED_OUT: {}}}

    async def receive() -> dict[str, Any]:  # what uvicorn hands over once the server gave up
        return {"type": "http.request", "body": b'{"id": "sl', "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async with started(faulty.svc, Settings(events_dir=str(tmp_path))) as runtime:
        runtime.events.sinks.append(sink)
        await create_app(runtime)(scope, receive, send)
        runtime.events.flush()
    start, body = sent
    assert start["status"] == 408
    assert (b"connection", b"close") in start["headers"]
    assert "read_timeout" in orjson.loads(body["body"])["error"]["message"]
    [event] = [e for e in sink.events if e["request_id"] == "slow-1"]
    assert (event["status"], event["error_category"]) == (408, "input_invalid")
