"""Requests leave no reference cycles behind.

The runtime collects the young generation only every 50k allocations
(``YOUNG_COLLECTION_THRESHOLD``); that is free only while serving creates no cyclic garbage,
which would otherwise pile up between collections. So every path a request can take through
the demo (served, model error, no time left, bad input, defaulted field, guardrail refusal)
is checked with the collector off: afterwards there must be nothing for it to find.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import orjson
import pytest

import buttress as bt
from buttress.demo.service import EXAMPLE, svc
from buttress.pipeline.runtime import YOUNG_COLLECTION_THRESHOLD
from tests.support import started

PATHS: dict[str, tuple[dict[str, Any], float | None]] = {
    "served": (EXAMPLE, None),
    "model error": ({**EXAMPLE, "order_id": "fail-model-1"}, None),
    "no time left": (EXAMPLE, 0.0),
    "bad input": ({"order_id": "o-1"}, None),
    "defaulted field": ({**EXAMPLE, "user": {"id": 42, "app_version": 5}}, None),
}


@pytest.mark.parametrize("path", list(PATHS))
async def test_a_request_path_leaves_nothing_for_the_collector(path: str, tmp_path: Path) -> None:
    document, deadline = PATHS[path]
    body = orjson.dumps(document)
    async with started(svc, bt.Settings(events_dir=str(tmp_path))) as runtime:
        assert gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD
        for index in range(20):  # first uses initialise things once (caches, lazy imports)
            await runtime.answer(body, request_id=f"w{index}", deadline_s=deadline)
        statuses = set()
        gc.collect()
        gc.disable()
        try:
            for index in range(150):  # the demo's guardrail refuses past 100 discounts
                answer = await runtime.answer(body, request_id=f"r{index}", deadline_s=deadline)
                statuses.add(answer.status)
            await asyncio.sleep(0.3)  # one flush of the event log
            gc.set_debug(gc.DEBUG_SAVEALL)
            found = gc.collect()
            kinds = sorted({type(o).__name__ for o in gc.garbage})
            gc.garbage.clear()
            gc.set_debug(0)
            assert found == 0, f"{path}: requests left reference cycles: {kinds}"
        finally:
            gc.enable()
        assert statuses == ({422} if path == "bad input" else {200})
