"""The admin API in process, through the real ASGI app (``httpx.ASGITransport``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from buttress.config import Settings
from buttress.http import create_app
from tests.services.guarded_service import COUNT_GUARDRAIL, guarded_service, per_user_count
from tests.support import free_port, started, unique_prefix

TOKEN = "admin-test-token"


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    served = guarded_service(unique_prefix("admin"), [per_user_count(3)])
    settings = Settings(events_dir=str(tmp_path / "events"), admin_token=TOKEN)
    async with started(served.svc, settings) as runtime:
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://buttress",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            yield http


@pytest.mark.parametrize("limit", [1e10, 9_000_000_001])
async def test_a_limit_past_the_bound_is_a_400_naming_the_bound(
        admin: httpx.AsyncClient, limit: float) -> None:
    response = await admin.post(f"/admin/guardrails/{COUNT_GUARDRAIL}", json={"limit": limit})
    assert response.status_code == 400, response.text  # was a plain-text 500 and a traceback
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["category"] == "input_invalid"
    assert "9e+09" in error["message"]
    assert error["fields"] == []
    accepted = await admin.post(f"/admin/guardrails/{COUNT_GUARDRAIL}", json={"limit": 9e9})
    assert accepted.status_code == 200


async def test_admin_errors_have_the_error_format(admin: httpx.AsyncClient) -> None:
    for path, body in ((f"/admin/guardrails/{COUNT_GUARDRAIL}", b'{"limit": 1e400}'),
                       ("/admin/guardrails/nope", b'{"limit": 1}'),
                       ("/admin/cache/invalidate", b'{"stage": "nope"}')):
        response = await admin.post(path, content=body)
        assert response.status_code in (400, 404), (path, response.text)
        assert set(response.json()["error"]) == {"category", "message", "fields"}



async def test_guardrail_routes_say_503_when_their_backend_does_not_answer(
        tmp_path: Path) -> None:
    """Guardrails on a Redis that refuses connections: reading their usage or changing a limit
    is a 503 naming ``guardrail_unavailable``, in the error format (it was a plain-text 500
    and a traceback; found by tests/reliability/test_faults_redis.py)."""
    served = guarded_service(unique_prefix("admin-down"), [per_user_count(3)])
    settings = Settings(events_dir=str(tmp_path / "events"), admin_token=TOKEN,
                        guardrails_url=f"redis://127.0.0.1:{free_port()}/0?timeout=50ms")
    async with started(served.svc, settings) as runtime:
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://buttress",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            for response in (await http.get("/admin/guardrails"),
                             await http.post(f"/admin/guardrails/{COUNT_GUARDRAIL}",
                                             json={"limit": 5})):
                assert response.status_code == 503, response.text
                error = response.json()["error"]
                assert error["category"] == "guardrail_unavailable"
                assert "guardrail backend" in error["message"]
