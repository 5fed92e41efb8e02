"""``/predict``'s transport in process, through the real ASGI app (``httpx.ASGITransport``)."""

from __future__ import annotations

from pathlib import Path

import httpx

from buttress.config import Settings
from buttress.http import create_app
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
