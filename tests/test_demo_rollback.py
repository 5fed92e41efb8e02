"""The demo's rollback rule, on the demo's own models and orders: promoting the over-generous
v2 rolls back to v1 by itself; promoting a re-release of v1 (same traffic, same rule) stays."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

import buttress as bt
from buttress.demo.data import generate_orders
from buttress.demo.service import svc
from buttress.pipeline.runtime import Runtime
from tests.support import started

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

ORDERS = [orjson.dumps(order) for order in generate_orders(300, seed=11)]


async def traffic(runtime: Runtime) -> None:
    """The same 300 orders each time, 30 at once."""
    for start in range(0, len(ORDERS), 30):
        answers = await asyncio.gather(*(runtime.answer(body, request_id=f"o{start + i}")
                                         for i, body in enumerate(ORDERS[start:start + 30])))
        assert all(a.status == 200 for a in answers)


async def until_serving(runtime: Runtime, version: str, within: float) -> None:
    started_at = time.monotonic()
    while runtime.pipeline.model_version != version:
        assert time.monotonic() - started_at < within, runtime.pipeline.model_version
        await asyncio.sleep(0.05)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # the demo's registry and models go to ./var
    return tmp_path


async def test_the_demo_registers_both_versions_and_rolls_v2_back_by_itself(
        workdir: Path) -> None:
    settings = bt.Settings(events_dir=str(workdir / "events"), max_concurrency="off")
    async with started(svc, settings) as runtime, \
            bt.Registry(settings.registry_url, models_dir=settings.models_dir) as registry:
        state = await registry.state("discount")
        assert state.aliases == {"stable": "v1", "candidate": "v2"}
        assert runtime.pipeline.model_version == "v1"
        await traffic(runtime)
        await registry.promote("discount", "v2", who="tour", why="retrained on November")
        await until_serving(runtime, "v2", within=10)
        await traffic(runtime)
        await until_serving(runtime, "v1", within=5)
        last = (await registry.history("discount", limit=1))[0]
        assert (last.who, last.from_version, last.to_version) == ("auto-rollback", "v2", "v1")
        assert last.why.startswith("rule mean_discount: mean_discount ")

        # a re-release of v1 under another name: same traffic, same rule, nothing fires
        v1 = await registry.version("discount", "v1")
        again = await registry.register("discount", workdir / settings.models_dir / v1.path,
                                        who="tour", allow_pickle=True)
        await registry.promote("discount", again.version, who="tour", why="re-release")
        await until_serving(runtime, again.version, within=10)
        await traffic(runtime)
        await asyncio.sleep(1.2)
        assert runtime.pipeline.model_version == again.version
        assert (await registry.history("discount", limit=1))[0].action == "promote"
