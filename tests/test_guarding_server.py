"""Guardrails in real ``buttress serve`` processes: HTTP headers, the admin API, /metrics, and
two replicas sharing one Redis.

The served service is tests/services/guarded_service.py (each request is granted what it asks
for; ``claims_per_user`` allows 3 per user, ``granted_value`` 100 overall). Every test names
its own service, so on the machine Redis it owns its namespace and deletes only those keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import REPO, RunningServer, metric_value, running_server
from tests.services.guarded_service import COUNT_GUARDRAIL, DEFAULT_GRANT, VALUE_GUARDRAIL
from tests.support import (
    MACHINE_REDIS_URL,
    delete_namespaces,
    machine_redis_available,
    unique_prefix,
)

pytestmark = pytest.mark.slow

GUARDED = f"{REPO / 'tests/services/guarded_service.py'}:svc"
TOKEN = "guardrail-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BACKENDS = [
    pytest.param("memory://", id="memory"),
    pytest.param(MACHINE_REDIS_URL, id="redis", marks=pytest.mark.redis),
]


@pytest.fixture
def service_name() -> Iterator[str]:
    """A fresh service name (its Redis namespace); its keys are deleted afterwards."""
    name = unique_prefix("guarded-server")
    yield name
    if machine_redis_available():
        asyncio.run(delete_namespaces(MACHINE_REDIS_URL, [name]))


def environment(name: str, url: str) -> dict[str, str]:
    return {"BUTTRESS_ADMIN_TOKEN": TOKEN, "BUTTRESS_GUARDRAILS_URL": url,
            "BUTTRESS_CACHE_URL": "memory://", "GUARDED_SERVICE_NAME": name}


def claim(server: RunningServer, user: str, value: float = 1.0) -> tuple[float, str | None]:
    """POST /predict; the granted value and the X-Fallback header."""
    response = httpx.post(f"{server.base_url}/predict", json={"user": user, "value": value},
                          timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["granted"], response.headers.get("x-fallback")


def set_limit(server: RunningServer, limit: float | None) -> httpx.Response:
    return httpx.post(f"{server.base_url}/admin/guardrails/{COUNT_GUARDRAIL}",
                      json={"limit": limit}, headers=AUTH, timeout=5)


def guardrails(server: RunningServer) -> dict[str, Any]:
    response = httpx.get(f"{server.base_url}/admin/guardrails", headers=AUTH, timeout=5)
    assert response.status_code == 200, response.text
    return {g["name"]: g for g in response.json()["guardrails"]}


ADMITTED = (5.0, None)
EXCEEDED = (DEFAULT_GRANT, "guardrail_exceeded")


@pytest.mark.parametrize("url", BACKENDS)
def test_limits_change_at_run_time_through_the_admin_api(
        url: str, service_name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if url.startswith("redis"):
        request.getfixturevalue("machine_redis_url")
    with running_server(GUARDED, tmp_path / "server", env=environment(service_name, url)) as server:
        assert [claim(server, "alice", 5) for _ in range(4)] == [ADMITTED] * 3 + [EXCEEDED]
        assert claim(server, "bob", 5) == ADMITTED

        assert httpx.get(f"{server.base_url}/admin/guardrails", timeout=5).status_code == 401
        assert httpx.post(f"{server.base_url}/admin/guardrails/{COUNT_GUARDRAIL}",
                          json={"limit": 9}, timeout=5).status_code == 401
        before = guardrails(server)[COUNT_GUARDRAIL]
        assert (before["limit"], before["keyed"]) == (3, True)
        assert {u["key"]: u["used"] for u in before["usage"]} == {"alice": 3, "bob": 1}

        assert set_limit(server, 5).json() == {"guardrail": COUNT_GUARDRAIL, "limit": 5}
        assert [claim(server, "alice", 5) for _ in range(3)] == [ADMITTED] * 2 + [EXCEEDED]
        assert set_limit(server, None).status_code == 200  # back to the declared 3
        assert claim(server, "bob", 5) == ADMITTED
        assert claim(server, "alice", 5) == EXCEEDED
        after = guardrails(server)
        assert after[COUNT_GUARDRAIL]["limit"] == 3
        assert after[VALUE_GUARDRAIL]["usage"] == [{"key": None, "used": 35, "remaining": 65}]

        assert set_limit(server, -1).status_code == 400
        assert httpx.post(f"{server.base_url}/admin/guardrails/{COUNT_GUARDRAIL}", content=b"{",
                          headers=AUTH, timeout=5).status_code == 400
        assert httpx.post(f"{server.base_url}/admin/guardrails/nope", json={"limit": 1},
                          headers=AUTH, timeout=5).status_code == 404

        metrics = server.metrics()  # the GET above refreshed the usage gauges
        assert metric_value(metrics, "buttress_guardrail_trips_total",
                            guardrail=COUNT_GUARDRAIL) == 3
        assert metric_value(metrics, "buttress_guardrail_trips_total",
                            guardrail=VALUE_GUARDRAIL) == 0
        assert metric_value(metrics, "buttress_guardrail_budget_used",
                            guardrail=COUNT_GUARDRAIL, key="alice") == 5
        assert metric_value(metrics, "buttress_guardrail_budget_remaining",
                            guardrail=COUNT_GUARDRAIL, key="bob") == 1
        assert metric_value(metrics, "buttress_guardrail_budget_used",
                            guardrail=VALUE_GUARDRAIL, key="") == 35
        assert metric_value(metrics, "buttress_fallbacks_total", stage="guardrails",
                            category="guardrail_exceeded") == 3
        assert "memory://" not in server.output()  # one worker: no per-process warning


@pytest.mark.redis
def test_replicas_on_one_redis_share_counts_and_limit_changes(
        machine_redis_url: str, service_name: str, tmp_path: Path) -> None:
    env = environment(service_name, machine_redis_url)
    with running_server(GUARDED, tmp_path / "a", env=env) as a, \
            running_server(GUARDED, tmp_path / "b", env=env) as b:
        assert [claim(a, "alice", 5), claim(b, "alice", 5), claim(a, "alice", 5)] == [ADMITTED] * 3
        assert claim(b, "alice", 5) == EXCEEDED  # b counts what a admitted
        assert claim(a, "alice", 5) == EXCEEDED

        assert set_limit(a, 4).status_code == 200  # changed on a ...
        assert guardrails(b)[COUNT_GUARDRAIL]["limit"] == 4
        assert claim(b, "alice", 5) == ADMITTED  # ... in force on b at once
        assert (claim(a, "alice", 5), claim(b, "alice", 5)) == (EXCEEDED, EXCEEDED)

        assert set_limit(b, 6).status_code == 200
        assert [claim(a, "alice", 5), claim(a, "alice", 5)] == [ADMITTED] * 2
        assert claim(b, "alice", 5) == EXCEEDED
        assert set_limit(b, None).status_code == 200
        assert guardrails(a)[COUNT_GUARDRAIL]["limit"] == 3
        assert guardrails(a)[COUNT_GUARDRAIL]["usage"] == [
            {"key": "alice", "used": 6, "remaining": 0}]


def test_workers_with_memory_guardrails_print_a_warning(service_name: str,
                                                        tmp_path: Path) -> None:
    env = environment(service_name, "memory://")
    with running_server(GUARDED, tmp_path / "server", env=env,
                        args=("--workers", "2")) as server:
        assert claim(server, "alice", 5) == ADMITTED
    warnings = [line for line in server.output().splitlines() if "warning:" in line]
    assert any("memory://" in line and "2 workers" in line for line in warnings), warnings
