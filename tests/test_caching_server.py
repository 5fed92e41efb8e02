"""The caches through a real ``buttress serve`` process: ``X-Cache``, ``Cache-Control:
no-cache``, the cache metrics, and ``POST /admin/cache/invalidate`` behind its token.

One server per backend of the matrix serves every test here; each test uses inputs no other
test sends and compares the service's call counters before and after, never absolute totals.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from tests.servers import REPO, RunningServer, metric_value, running_server
from tests.support import machine_redis_available, unique_prefix
from tests.test_cache_contract import BACKENDS

pytestmark = pytest.mark.slow

TARGET = f"{REPO / 'tests/services/cached_service.py'}:svc"
TOKEN = "cache-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
_inputs = itertools.count(1)


def fresh_x() -> float:
    """An ``x`` no other request of this module sends, so its entry is this test's own."""
    return float(next(_inputs)) + 0.25


@pytest.fixture(scope="module", params=[BACKENDS["memory"], BACKENDS["redis"]])
def backend_url(request: pytest.FixtureRequest) -> str:
    url: str = request.param
    return url


@pytest.fixture(scope="module")
def server(backend_url: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    url = backend_url
    name = unique_prefix("cached-server")
    if url.startswith("redis") and not machine_redis_available():
        pytest.fail("Redis is not running on 127.0.0.1:6379 (.ci/run starts it)")
    env = {"BUTTRESS_CACHE_URL": url, "BUTTRESS_ADMIN_TOKEN": TOKEN,
           "CACHED_SERVICE_NAME": name}
    try:
        with running_server(TARGET, tmp_path_factory.mktemp("cached"), env=env) as running:
            yield running
    finally:
        if url.startswith("redis"):  # this server's namespace only
            client = redis.Redis.from_url(url)
            keys = list(client.scan_iter(match=f"buttress:{{{name}}}:*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        yield client


def predict(http: httpx.Client, request: dict[str, Any],
            headers: dict[str, str] | None = None) -> httpx.Response:
    response = http.post("/predict", content=orjson.dumps(request), headers=headers)
    assert response.status_code == 200, response.text
    return response


def calls(response: httpx.Response) -> tuple[int, int]:
    """(model calls, feature calls) when this answer was computed."""
    answer = response.json()
    return answer["model_calls"], answer["feature_calls"]


def lookups(server: RunningServer, result: str) -> float:
    return metric_value(server.metrics(), "buttress_cache_lookups_total",
                        cache="response", result=result)


def test_the_caches_live_on_the_configured_backend(backend_url: str,
                                                   http: httpx.Client) -> None:
    status = http.get("/admin/status", headers=AUTH).json()
    assert {name: cache["url"] for name, cache in status["caches"].items()} == {
        "response": backend_url, "features": backend_url}


def test_x_cache_and_no_cache(server: RunningServer, http: httpx.Client) -> None:
    request = {"x": fresh_x(), "user": 1}
    hits = lookups(server, "hit")
    first = predict(http, request)
    again = predict(http, request)
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("miss", "hit")
    assert again.content == first.content
    assert "x-fallback" not in again.headers
    assert lookups(server, "hit") == hits + 1

    fresh = predict(http, request, {"Cache-Control": "no-cache"})
    assert fresh.headers["x-cache"] == "bypass"
    assert calls(fresh)[0] > calls(first)[0]  # the model ran again
    after = predict(http, request)
    assert after.headers["x-cache"] == "hit"
    assert after.content == fresh.content  # the bypass refreshed the entry


def test_a_fallback_answer_is_never_served_from_the_cache(http: httpx.Client) -> None:
    request = {"x": fresh_x(), "mode": "raise"}
    for _ in range(2):
        failed = predict(http, request)
        assert failed.headers["x-cache"] == "miss"
        assert failed.headers["x-fallback"] == "model_error"


def test_invalidate_every_cache_of_the_service(server: RunningServer,
                                               http: httpx.Client) -> None:
    request = {"x": fresh_x(), "user": 2}
    first = predict(http, request)
    assert predict(http, request).headers["x-cache"] == "hit"
    done = http.post("/admin/cache/invalidate", headers=AUTH)
    assert done.status_code == 200, done.text
    assert done.json() == {"invalidated": {"response": True, "features": True}}
    recomputed = predict(http, request)
    assert recomputed.headers["x-cache"] == "miss"
    model_before, features_before = calls(first)
    model_after, features_after = calls(recomputed)
    assert model_after > model_before
    assert features_after > features_before  # the stage cache was emptied too


def test_invalidate_one_stage(http: httpx.Client) -> None:
    user = 3
    request = {"x": fresh_x(), "user": user}
    first = predict(http, request)
    # another response for the same user: the stage cache answers, features do not run
    assert calls(predict(http, {"x": fresh_x(), "user": user}))[1] == calls(first)[1]

    done = http.post("/admin/cache/invalidate", json={"stage": "features"}, headers=AUTH)
    assert done.status_code == 200, done.text
    assert done.json() == {"invalidated": {"features": True}}
    cached = predict(http, request)
    assert cached.headers["x-cache"] == "hit"  # the response cache was left alone
    other = predict(http, {"x": fresh_x(), "user": user})
    assert calls(other)[1] > calls(first)[1]  # the features ran again

    unknown = http.post("/admin/cache/invalidate", json={"stage": "nope"}, headers=AUTH)
    assert unknown.status_code == 404
    assert "features" in unknown.json()["error"]["message"]


def test_invalidate_needs_the_token(http: httpx.Client) -> None:
    assert http.post("/admin/cache/invalidate").status_code == 401
    wrong = http.post("/admin/cache/invalidate", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_admin_does_not_exist_without_a_token(tmp_path: Path) -> None:
    env = {"CACHED_SERVICE_NAME": unique_prefix("cached-no-admin")}
    with running_server(TARGET, tmp_path, env=env) as server, \
            httpx.Client(base_url=server.base_url, timeout=10) as http:
        assert http.post("/admin/cache/invalidate", headers=AUTH).status_code == 404
        assert predict(http, {"x": 1.0}).headers["x-cache"] == "miss"
