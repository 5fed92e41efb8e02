"""The service the faults-under-load tests serve: the demo's shape, every component on Redis.

The discount demo's input, output, feature tables and feature stages (user and product
look-ups, 30 ms each, default features on failure), plus what the demo leaves out so that every
Redis-backed component is exercised: a response cache and a stage cache on the user features.
The model is a cheap formula (no training, no registry), batched like the demo's, behind a
100 ms timeout, the default (rate) breaker and the default prediction (0 % discount). One
guardrail, fail closed: at most :data:`ORDER_LIMIT` discounted orders per user in any 24 hours
(a sliding window: exact, with no window edge for a run to cross), which the load's "hot"
users reach within seconds, so every fault is checked against a spent budget.

The model's faults are switched at run time by the test, through a file: ``$FAULT_DIR/model``
holds ``raise`` (the model raises on the orders :func:`fails_on_raise` picks, 20 % of them),
``slow`` (each call sleeps :data:`SLOW_SECONDS`, 10x its timeout) or nothing. It is re-read
at most every 100 ms, so a flip reaches every replica within that.

Configured by environment: ``FAULT_SERVICE_NAME`` (its Redis namespace), ``FAULT_DIR``; the
backend by ``BUTTRESS_BACKEND``, which :func:`seed` fills first.
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

import buttress as bt
from buttress.backends import Connections
from buttress.demo.data import PRODUCT_DEFAULTS, USER_DEFAULTS, generate_products, generate_users
from buttress.demo.model import build_rows, clip_discount
from buttress.demo.service import (
    EXAMPLE,
    PRODUCT_TABLE,
    USER_TABLE,
    Discount,
    Discounts,
    Order,
    default_discounts,
    discounted,
)

ORDER_LIMIT = 10
"""Discounted orders per user in any 24 hours."""
MODEL_TIMEOUT = 0.1
SLOW_SECONDS = 10 * MODEL_TIMEOUT
RAISE_SHARE = 5
"""One order in ``RAISE_SHARE`` makes the model raise while the switch says ``raise``."""
SWITCH_PERIOD = 0.1
GUARDRAIL = "discounted_orders_per_user_per_day"


def fails_on_raise(order_id: str) -> bool:
    """Whether the model raises on this order while the switch says ``raise`` (20 %)."""
    return zlib.crc32(order_id.encode()) % RAISE_SHARE == 0


class FaultSwitch:
    """The file ``$FAULT_DIR/model``, read at most every :data:`SWITCH_PERIOD` seconds (the
    model threads and the event loop both ask; a stale answer for 100 ms is harmless)."""

    def __init__(self, directory: str | None) -> None:
        self.path = Path(directory) / "model" if directory else None
        self._mode = ""
        self._read_at = 0.0
        self._lock = threading.Lock()

    def mode(self) -> str:
        now = time.monotonic()
        if self.path is None or now - self._read_at < SWITCH_PERIOD:
            return self._mode
        with self._lock:
            if now - self._read_at >= SWITCH_PERIOD:
                try:
                    self._mode = self.path.read_text().strip()
                except FileNotFoundError:
                    self._mode = ""
                self._read_at = now
        return self._mode


SWITCH = FaultSwitch(os.environ.get("FAULT_DIR"))
MARGIN_COLUMN = 8  # build_rows' columns: ..., price, margin, quantity
FAULT_COLUMN = -1  # added here: 1.0 on the rows of an order picked to fail


def discount_formula(rows: np.ndarray) -> np.ndarray:
    """The model: a discount from the seller's margin and the user's return rate (a few µs a
    batch, so the model's own faults are the only model faults), raising or slowed on demand."""
    mode = SWITCH.mode()
    if mode == "slow":
        time.sleep(SLOW_SECONDS)
    if mode == "raise" and rows[:, FAULT_COLUMN].any():
        raise RuntimeError("injected model failure (the fault switch says raise)")
    margin, return_rate = rows[:, MARGIN_COLUMN], rows[:, 1]
    return np.asarray(2.0 + 30.0 * margin - 10.0 * return_rate)


svc = bt.Service(
    os.environ.get("FAULT_SERVICE_NAME", "faults"), input=Order, output=Discounts,
    example=EXAMPLE, cache=bt.Cache(ttl="60s"),
    guardrails=[bt.SlidingWindow(GUARDRAIL, limit=ORDER_LIMIT, window="24h",
                                 measure=discounted, key=lambda order: str(order.user.id),
                                 fail="closed")],
)


@svc.resource
async def features(runtime: bt.Runtime) -> bt.FeatureStore:
    """The demo's users and products, written by :func:`seed` before the replicas start (a
    replica starting while Redis is slow must not fail writing 7,000 rows in 50 ms)."""
    store = bt.FeatureStore(runtime.settings.feature_store_url, [USER_TABLE, PRODUCT_TABLE],
                            namespace=svc.name)
    await store.open(runtime.connections)
    return store


async def seed(url: str, namespace: str) -> None:
    """Write the demo's users and products to the Redis at ``url``, for the service named
    ``namespace``."""
    connections = Connections()
    try:
        store = bt.FeatureStore(f"{url}?timeout=5s", [USER_TABLE, PRODUCT_TABLE],
                                namespace=namespace)
        await store.open(connections)
        await store.put_many("product", generate_products().items())
        await store.put_many("user", generate_users().items())
    finally:
        await connections.aclose()


@svc.stage(timeout="30ms", fallback=lambda order: dict(USER_DEFAULTS),
           category=bt.Category.FEATURES_UNAVAILABLE,
           cache=bt.Cache(ttl="5min", key=lambda order: order.user.id))
async def user_features(order: Order, features: bt.FeatureStore,
                        ctx: bt.RequestContext) -> dict[str, Any]:
    lookup = await features.get_many("user", [order.user.id])
    if lookup.missing:  # never, unless Redis lost its data
        ctx.record(bt.Category.FEATURES_MISSING, "user_features", f"user {order.user.id}")
    return lookup.rows[0]


@svc.stage(timeout="30ms", fallback=lambda order: [PRODUCT_DEFAULTS] * len(order.sub_orders),
           category=bt.Category.FEATURES_UNAVAILABLE)
async def product_features(order: Order, features: bt.FeatureStore,
                           ctx: bt.RequestContext) -> list[dict[str, Any]]:
    lookup = await features.get_many("product", [sub.product_id for sub in order.sub_orders])
    if lookup.missing:
        ctx.record(bt.Category.FEATURES_MISSING, "product_features",
                   f"products {', '.join(lookup.missing)}")
    return list(lookup.rows)


@svc.model(model=discount_formula, version="f1", timeout=MODEL_TIMEOUT,
           fallback=default_discounts, batch=bt.Batch(max_size=64, max_wait="2ms"))
def discount_model(order: Order, user_features: dict[str, Any],
                   product_features: list[dict[str, Any]]) -> np.ndarray:
    rows = build_rows(order, user_features, product_features)
    fault = float(SWITCH.mode() == "raise" and fails_on_raise(order.order_id))
    return np.column_stack([rows, np.full(len(rows), fault)])


@svc.respond
def respond(order: Order, discount_model: np.ndarray) -> Discounts:
    pct = clip_discount(np.asarray(discount_model, dtype=np.float64))
    return Discounts(order_id=order.order_id, discounts=[
        Discount(sub_order_id=sub.sub_order_id, discount_pct=round(float(p), 2))
        for sub, p in zip(order.sub_orders, pct, strict=True)])
