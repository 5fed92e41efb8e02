"""The demo service against its feature store: missing ids, a store that dies and recovers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from buttress.config import Settings
from buttress.demo.service import EXAMPLE, svc
from buttress.pipeline.runtime import Runtime
from tests.support import PrivateRedis, started

pytestmark = pytest.mark.redis


def order(user_id: int = 42, product_id: int = 501) -> bytes:
    body = orjson.loads(orjson.dumps(EXAMPLE))
    body["user"]["id"] = user_id
    body["sub_orders"][0]["product_id"] = product_id
    return orjson.dumps(body)


@pytest.fixture
async def demo_on_private_redis(
    private_redis: PrivateRedis, tmp_path: Path
) -> AsyncIterator[Runtime]:
    settings = Settings(features_url=f"{private_redis.url}?timeout=50ms",
                        events_dir=str(tmp_path / "events"))
    async with started(svc, settings) as runtime:
        yield runtime


async def test_unknown_user_and_product_get_default_features(
    demo_on_private_redis: Runtime,
) -> None:
    answer = await demo_on_private_redis.answer(order(user_id=999_999, product_id=999_999),
                                                request_id="t")
    assert answer.status == 200
    assert answer.context.fallback_categories == ["features_missing"]
    stages = {f.stage for f in answer.context.fallbacks}
    assert stages == {"user_features", "product_features"}


@pytest.mark.slow
async def test_store_down_serves_defaults_then_recovers(
    demo_on_private_redis: Runtime, private_redis: PrivateRedis
) -> None:
    runtime = demo_on_private_redis
    healthy = await runtime.answer(order(), request_id="before")
    assert healthy.status == 200
    assert healthy.context.fallbacks == []

    private_redis.stop()
    for i in range(8):  # the first few wait for the 50 ms timeout, then the breaker opens
        started = time.perf_counter()
        answer = await runtime.answer(order(), request_id=f"down-{i}")
        assert answer.status == 200
        assert "features_unavailable" in answer.context.fallback_categories
        assert time.perf_counter() - started < 0.2
        assert orjson.loads(answer.body)["discounts"][0]["discount_pct"] >= 0

    private_redis.start()  # same port, empty: load the features again, as an operator would
    store = runtime.pipeline.resources["features"]
    from buttress.demo.data import generate_products, generate_users

    await store.put_many("user", {42: generate_users()[42]})
    await store.put_many("product", {501: generate_products()[501]})
    # The stage breakers stay open for their 5 s interval, then a probe closes them.
    deadline = time.monotonic() + 10
    while True:
        recovered = await runtime.answer(order(), request_id="after")
        assert recovered.status == 200
        if not recovered.context.fallbacks or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert recovered.context.fallbacks == []
    assert recovered.body == healthy.body
