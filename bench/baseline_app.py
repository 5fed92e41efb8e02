"""The raw Starlette baseline: the same model, none of buttress's layers.

JSON in, the demo's own feature rows, the model off the event loop, JSON out. What buttress
adds (validation with contract records, feature stages with fallbacks, deadlines, breakers,
metrics, one event per request) is measured against this.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from buttress.demo.data import generate_products, generate_users
from buttress.demo.model import as_order, build_rows, clip_discount
from buttress.demo.train import load_model
from buttress.runners import limit_native_threads

MODEL = load_model("v1")
USERS = generate_users()
PRODUCTS = generate_products()
# as buttress does: model threads that each cap OpenMP at one thread (no oversubscription)
EXECUTOR = ThreadPoolExecutor(max_workers=2, initializer=limit_native_threads, initargs=(1,))


async def predict(request: Request) -> Response:
    order = as_order(orjson.loads(await request.body()))
    rows = build_rows(order, USERS.get(order.user.id),
                      [PRODUCTS.get(s.product_id) for s in order.sub_orders])
    loop = asyncio.get_running_loop()
    pct = clip_discount(np.asarray(await loop.run_in_executor(EXECUTOR, MODEL.predict, rows)))
    body = {"order_id": order.order_id, "discounts": [
        {"sub_order_id": s.sub_order_id, "discount_pct": round(float(p), 2)}
        for s, p in zip(order.sub_orders, pct, strict=True)]}
    return Response(orjson.dumps(body), media_type="application/json")


async def ready(request: Request) -> Response:
    return Response(b"ok")


app = Starlette(routes=[Route("/predict", predict, methods=["POST"]),
                        Route("/readyz", ready)])
