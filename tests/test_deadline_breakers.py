"""A client's own deadline is not a dependency's failure: it never opens a shared breaker.

The demo on its embedded defaults (features in SQLite, looked up off the event loop) with
``X-Deadline-Ms: 0``: every feature look-up times out, but the request's deadline cut it, not
the stage's own 30 ms timeout, so the breakers every client shares stay closed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import DEMO, RunningServer, running_server

pytestmark = pytest.mark.slow

ORDER: dict[str, Any] = {
    "order_id": "o-1", "user": {"id": 42, "app_version": "5.12.0"},
    "sub_orders": [{"sub_order_id": "so-1", "product_id": 501, "price": 499.0, "quantity": 1}]}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir: Path = tmp_path_factory.mktemp("sqlite-demo")
    env = {"BUTTRESS_FEATURES_URL": f"sqlite:///{workdir / 'features.db'}"}
    with running_server(DEMO, workdir, env=env) as server:
        yield server


def open_breakers(http: httpx.Client) -> list[str]:
    return [line for line in http.get("/metrics").text.splitlines()
            if line.startswith("buttress_breaker_open{") and not line.endswith(" 0.0")]


def test_a_clients_own_deadline_never_opens_a_shared_breaker(demo: RunningServer) -> None:
    with httpx.Client(base_url=demo.base_url, timeout=10) as http:
        served_fallbacks = set()
        for _ in range(100):
            response = http.post("/predict", json=ORDER, headers={"X-Deadline-Ms": "0"})
            assert response.status_code == 200
            served_fallbacks.update(response.headers.get("x-fallback", "").split(","))
        # the requests did time out (the test would prove nothing otherwise) ...
        assert "features_unavailable" in served_fallbacks
        # ... but no breaker counted it, and the next client is served in full
        assert open_breakers(http) == []
        healthy = http.post("/predict", json={**ORDER, "user": {"id": 7}})
        assert healthy.status_code == 200
        assert "x-fallback" not in healthy.headers


def test_a_dependencys_own_timeouts_still_count(demo: RunningServer) -> None:
    """The other half of the rule: the breaker still opens on the model's real errors."""
    with httpx.Client(base_url=demo.base_url, timeout=10) as http:
        for i in range(30):
            http.post("/predict", json={**ORDER, "order_id": f"fail-model-{i}"})
        assert any("discount_model" in line for line in open_breakers(http))
