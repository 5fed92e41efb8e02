"""Events written by a real server: exactly one per request under concurrency, across file
rotations, to stdout as well, and nothing lost on SIGTERM."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.servers import DEMO, running_server

LOGGED_DEMO = DEMO  # the demo declares its prediction summary

pytestmark = pytest.mark.slow


def demo_order(order_id: str, *, price: float = 499.0, renamed: bool = False,
               app_version: str = "5.12.0", sub_orders: int = 1) -> dict[str, Any]:
    margin_key = "seller_margin" if renamed else "margin"
    return {"order_id": order_id, "user": {"id": 42, "app_version": app_version},
            "sub_orders": [{"sub_order_id": f"so-{i}", "product_id": 501 + i, "price": price,
                            margin_key: 0.18, "quantity": 1} for i in range(sub_orders)]}


def mixed_requests(count: int) -> list[tuple[str, bytes]]:
    """``count`` demo requests: plain, renamed keys, failing models, invalid ones."""
    requests = []
    for i in range(count):
        kind = i % 5
        if kind == 0:
            body = demo_order(f"o-{i}", sub_orders=1 + i % 3)
        elif kind == 1:
            body = demo_order(f"o-{i}", renamed=True, app_version="5.11.0")
        elif kind == 2:
            body = demo_order(f"fail-model-{i}")
        elif kind == 3:
            body = demo_order(f"o-{i}", price=900.0 + i)
        else:
            body = {"user": {"id": 1}, "sub_orders": []}  # invalid: 422
        requests.append((f"req-{i}", orjson.dumps(body)))
    return requests


async def drive(base_url: str, requests: list[tuple[str, bytes]],
                concurrency: int = 16) -> dict[str, int]:
    """Send every request, ``concurrency`` at a time; return the status of each id."""
    statuses: dict[str, int] = {}
    queue = list(requests)
    async with httpx.AsyncClient(base_url=base_url, timeout=20) as http:

        async def worker() -> None:
            while queue:
                request_id, body = queue.pop()
                response = await http.post("/predict", content=body, headers={
                    "X-Request-Id": request_id, "Content-Type": "application/json"})
                statuses[request_id] = response.status_code

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def test_one_event_per_request_under_concurrency_across_rotations(tmp_path: Path) -> None:
    env = {"BUTTRESS_EVENTS_ROTATE_BYTES": "8KiB", "BUTTRESS_EVENTS_STDOUT": "true"}
    requests = mixed_requests(300)
    with running_server(LOGGED_DEMO, tmp_path, env=env) as server:
        statuses: dict[str, int] = {}
        for wave in range(5):  # files rotate between batches: pauses past the 0.2 s flush
            statuses |= asyncio.run(drive(server.base_url, requests[wave::5]))
            time.sleep(0.3)
        assert server.stop() == 0, server.output()
    events = server.events()
    assert collections.Counter(e["request_id"] for e in events) == collections.Counter(
        statuses.keys()), "expected exactly one event per request"
    assert len(list(server.events_dir.glob("events-*.jsonl"))) > 3, "the files rotated"
    by_id = {e["request_id"]: e for e in events}
    assert {by_id[i]["status"] for i in statuses} == {200, 422}
    for request_id, status in statuses.items():
        event = by_id[request_id]
        assert event["status"] == status
        assert event["v"] == 1
        if status == 200:
            assert set(event["prediction"]) == {"order_value", "sub_orders", "discount_value",
                                                "mean_discount_pct", "app_version"}
        else:
            assert event["prediction"] is None
    failing = [by_id[f"req-{i}"]["fallbacks"] for i in range(2, 300, 5)]  # fail-model-*
    # the model raised, or its breaker had opened on the earlier ones
    assert all(f in (["model_error"], ["model_unavailable"]) for f in failing)
    assert ["model_error"] in failing
    assert by_id["req-1"]["prediction"]["app_version"] == "5.11.0"
    stdout = [orjson.loads(line) for line in server.output().splitlines()
              if line.startswith("{")]
    assert sorted(e["request_id"] for e in stdout if e["kind"] == "request") == sorted(
        statuses)
