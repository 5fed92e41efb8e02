"""Raw Starlette baselines for ``bench/batching.py``: the same models, none of buttress.

Factories, one per scenario, so a server process loads only the model it serves::

    uvicorn --factory bench.raw_apps:tabular_unbatched   # one executor hop per request
    uvicorn --factory bench.raw_apps:tabular_batched     # MiniBatcher: 64 rows or 2 ms
    uvicorn --factory bench.raw_apps:mlp_unbatched
    uvicorn --factory bench.raw_apps:mlp_batched

The tabular apps do what ``bench/baseline_app.py`` does (the demo's feature rows from dicts,
the model off the event loop). Model threads cap OpenMP/BLAS at one thread each, as buttress's
runners do (``limit_native_threads``), so the comparison is fair. ``GET /stats`` reports the
batches run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from threadpoolctl import threadpool_limits

Predict = Callable[[np.ndarray], Awaitable[np.ndarray]]
MAX_ROWS = 64
MAX_WAIT = 0.002


class MiniBatcher:
    """The simplest batcher that works: the floor buttress's batched pipeline is held to.

    Items queue as (rows, future); the queue flushes when it holds ``MAX_ROWS`` rows or
    ``MAX_WAIT`` after its first item, with one executor hop per batch. Batches may overlap
    (as many as the executor has threads); no deadlines, no bounded queue, no isolation.
    """

    def __init__(self, predict: Callable[[np.ndarray], Any], executor: ThreadPoolExecutor):
        self.predict, self.executor = predict, executor
        self.items: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self.rows = self.batches = self.batched_rows = 0
        self.timer: asyncio.TimerHandle | None = None

    async def submit(self, rows: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self.items.append((rows, future))
        self.rows += len(rows)
        if self.rows >= MAX_ROWS:
            self.flush()
        elif self.timer is None:
            self.timer = loop.call_later(MAX_WAIT, self.flush)
        return await future

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        items, self.items, self.rows = self.items, [], 0
        batch = np.concatenate([rows for rows, _ in items])
        self.batches, self.batched_rows = self.batches + 1, self.batched_rows + len(batch)
        done = asyncio.get_running_loop().run_in_executor(self.executor, self.predict, batch)
        done.add_done_callback(partial(self.deliver, items))

    @staticmethod
    def deliver(items: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]],
                done: asyncio.Future[np.ndarray]) -> None:
        error = done.exception()
        out = None if error else np.asarray(done.result())
        start = 0
        for rows, future in items:
            end = start + len(rows)
            if future.done():  # its caller went away
                pass
            elif error is not None:
                future.set_exception(error)
            else:
                future.set_result(out[start:end])  # type: ignore[index]
            start = end


def _executor() -> ThreadPoolExecutor:
    # as buttress does: two model threads that each cap OpenMP/BLAS at one thread (the limit
    # is per calling thread); threadpoolctl directly, so the baseline imports no buttress
    return ThreadPoolExecutor(max_workers=2, initializer=threadpool_limits, initargs=(1,))


def _app(handle: Callable[[bytes, Predict], Awaitable[bytes]], predict: Callable[[Any], Any],
         batched: bool) -> Starlette:
    executor = _executor()
    batcher = MiniBatcher(predict, executor) if batched else None

    async def run(rows: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        return np.asarray(await loop.run_in_executor(executor, predict, rows))

    infer: Predict = batcher.submit if batcher is not None else run

    async def predict_route(request: Request) -> Response:
        return Response(await handle(await request.body(), infer), media_type="application/json")

    async def ready(request: Request) -> Response:
        return Response(b"ok")

    async def stats(request: Request) -> Response:
        counts = {"batches": batcher.batches, "rows": batcher.batched_rows} if batcher else {}
        return Response(orjson.dumps(counts), media_type="application/json")

    return Starlette(routes=[Route("/predict", predict_route, methods=["POST"]),
                             Route("/readyz", ready), Route("/stats", stats)])


def tabular_handler() -> Callable[[bytes, Predict], Awaitable[bytes]]:
    """The raw tabular endpoint's work on one body: parse, features from dicts, the model
    (through ``infer``), the response. Also driven in-process by ``bench/pipeline_layers.py``."""
    from buttress.demo.data import generate_products, generate_users
    from buttress.demo.model import as_order, build_rows, clip_discount

    users, products = generate_users(), generate_products()

    async def handle(body: bytes, infer: Predict) -> bytes:
        order = as_order(orjson.loads(body))
        rows = build_rows(order, users.get(order.user.id),
                          [products.get(s.product_id) for s in order.sub_orders])
        pct = clip_discount(await infer(rows))
        return orjson.dumps({"order_id": order.order_id, "discounts": [
            {"sub_order_id": s.sub_order_id, "discount_pct": round(float(p), 2)}
            for s, p in zip(order.sub_orders, pct, strict=True)]})

    return handle


def _tabular(batched: bool) -> Starlette:
    from buttress.demo.train import load_model

    return _app(tabular_handler(), load_model("v1").predict, batched)


def _mlp(batched: bool) -> Starlette:
    from bench.services.network import MLP, row_from

    model = MLP()

    async def handle(body: bytes, infer: Predict) -> bytes:
        request = orjson.loads(body)
        score = await infer(row_from(request["x"]))
        return orjson.dumps({"id": request["id"], "score": round(float(score[0]), 6)})

    return _app(handle, model.predict, batched)


def tabular_unbatched() -> Starlette:
    return _tabular(batched=False)


def tabular_batched() -> Starlette:
    return _tabular(batched=True)


def mlp_unbatched() -> Starlette:
    return _mlp(batched=False)


def mlp_batched() -> Starlette:
    return _mlp(batched=True)
