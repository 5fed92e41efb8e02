"""The discount demo: how much discount to give on each sub-order of an order.

Serve it with ``buttress demo`` (or ``buttress serve buttress.demo.service:svc``).
It exercises every layer: a typed input that absorbs a renamed key (``seller_margin``) and
wrong types, user and product feature look-ups that fall back to default features (each
user's cached for 5 minutes: a sub-module cache, for the dashboard's cache panel to show), a
scikit-learn model behind a deadline and a circuit breaker with a default prediction, served
from the model registry (``stable``), hot-swapped when the alias moves, and rolled back by
itself when a promoted version hands out much more discount than the one before.

Fault injection, for the tour and the tests: an ``order_id`` starting with ``fail-model``
makes the model stage raise (``model_error``); a client header ``X-Deadline-Ms: 1`` leaves
the stages no time (``model_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import numpy as np

import buttress as bt
from buttress.demo.data import (
    PRODUCT_DEFAULTS,
    USER_DEFAULTS,
    generate_products,
    generate_users,
)
from buttress.demo.model import DEFAULT_DISCOUNT_PCT, build_rows, clip_discount
from buttress.demo.train import ensure_models
from buttress.registry import VersionExists

MODEL_NAME = "discount"
MODEL_VERSION = "v1"
"""The version the demo's registry starts with as ``stable``."""
DEMO_ACTOR = "buttress-demo"
VERSION_NOTES = {
    "v1": "the demo's model: learns the ground truth",
    "v2": "a promo-happy retrain: hands out ~50% more discount (the rollback rule catches it)",
}


class User(bt.Input):
    id: int
    app_version: str = "unknown"


class SubOrder(bt.Input):
    sub_order_id: str
    product_id: int
    price: float = bt.field(ge=0)
    margin: float = bt.field(0.0, aliases=["seller_margin"])
    quantity: int = bt.field(1, ge=1)


class Order(bt.Input):
    order_id: str
    user: User
    sub_orders: list[SubOrder] = bt.field(min_length=1, max_length=50)


class Discount(bt.Output):
    sub_order_id: str
    discount_pct: float


class Discounts(bt.Output):
    order_id: str
    discounts: list[Discount]


EXAMPLE = {
    "order_id": "o-1",
    "user": {"id": 42, "app_version": "5.12.0"},
    "sub_orders": [{"sub_order_id": "so-1", "product_id": 501, "price": 499.0,
                    "margin": 0.18, "quantity": 1}],
}

def discount_value(order: Order, response: Discounts) -> float:
    """What a response hands out: price x quantity x discount_pct / 100, summed."""
    return sum(sub.price * sub.quantity * d.discount_pct / 100
               for sub, d in zip(order.sub_orders, response.discounts, strict=True))


def discounted(order: Order, response: Discounts) -> float:
    """1 for an order that got any discount: the per-user guardrail counts those."""
    return 1.0 if any(d.discount_pct > 0 for d in response.discounts) else 0.0


GUARDRAILS = [
    # at most 1.5 million of discount value per minute over all users (bursts trip it)
    bt.SlidingWindow("discount_value_per_minute", limit=1_500_000, window="1min",
                     measure=discount_value),
    # at most 100 discounted orders per user per hour
    bt.FixedWindow("discounted_orders_per_user_per_hour", limit=100, window="1h",
                   measure=discounted, key=lambda order: str(order.user.id)),
]

svc = bt.Service(
    "discount", input=Order, output=Discounts, example=EXAMPLE, guardrails=GUARDRAILS,
    description="Discount percentage per sub-order of an order.",
)

USER_TABLE = bt.FeatureTable("user", USER_DEFAULTS)
PRODUCT_TABLE = bt.FeatureTable("product", PRODUCT_DEFAULTS)


@svc.resource
async def features(runtime: bt.Runtime) -> bt.FeatureStore:
    """The feature store at ``features_url`` (default: ``backend``), seeded with the demo's
    synthetic users and products the first time it is empty."""
    store = bt.FeatureStore(runtime.settings.feature_store_url, [USER_TABLE, PRODUCT_TABLE],
                         namespace=svc.name)
    await store.open(runtime.connections)
    if not (await store.get_many("user", [1])).found[0]:
        await store.put_many("user", generate_users().items())
        await store.put_many("product", generate_products().items())
    return store


@svc.stage(timeout="30ms", fallback=lambda order: dict(USER_DEFAULTS),
           category=bt.Category.FEATURES_UNAVAILABLE,
           cache=bt.Cache(ttl="5min", key=lambda order: order.user.id))
async def user_features(order: Order, features: bt.FeatureStore,
                        ctx: bt.RequestContext) -> dict[str, Any]:
    lookup = await features.get_many("user", [order.user.id])
    if lookup.missing:
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


def default_discounts(order: Order) -> np.ndarray:
    return np.full(len(order.sub_orders), DEFAULT_DISCOUNT_PCT)


def mean_discount(order: Order, response: Discounts) -> float:
    """The mean discount of one answer, in percent: what the rollback rule compares."""
    return sum(d.discount_pct for d in response.discounts) / len(response.discounts)


@svc.on_startup
async def register_versions(runtime: bt.Runtime) -> None:
    """At the first start in a folder, put both trained versions in its registry: ``v1``
    stable, ``v2`` (the over-generous retrain) the candidate the tour promotes.

    They are joblib (pickle) files, registered with ``allow_pickle`` and loaded with
    ``FromRegistry(..., allow_pickle=True)``: acceptable only because this very package
    trained them on this machine (``buttress.demo.train``); never do it for a downloaded file.
    """
    settings = runtime.settings
    async with bt.Registry(settings.registry_url, models_dir=settings.models_dir,
                           connections=runtime.connections) as registry:
        if MODEL_NAME in await registry.names():
            return
        paths = await asyncio.to_thread(ensure_models)
        for version, notes in VERSION_NOTES.items():
            with contextlib.suppress(VersionExists):  # another worker got there first
                await registry.register(MODEL_NAME, paths[version], who=DEMO_ACTOR,
                                        version=version, notes=notes, allow_pickle=True,
                                        candidate=version != MODEL_VERSION)
        await registry.promote(MODEL_NAME, MODEL_VERSION, who=DEMO_ACTOR,
                               why="first start of the demo")


@svc.model(model=bt.FromRegistry(MODEL_NAME, alias="stable", allow_pickle=True),
           timeout="100ms", fallback=default_discounts,
           breaker=bt.Breaker(consecutive_failures=5, open_for="5s"),
           batch=bt.Batch(max_size=64, max_wait="2ms"),
           rollback=[bt.RollbackRule("mean_discount", measure=mean_discount, max_increase=0.25,
                                     min_requests=200, watch_for="5min")])
def discount_model(order: Order, user_features: dict[str, Any],
                   product_features: list[dict[str, Any]]) -> np.ndarray:
    if order.order_id.startswith("fail-model"):
        raise RuntimeError("injected model failure (order_id starts with 'fail-model')")
    return build_rows(order, user_features, product_features)


@svc.log_prediction
def summary(order: Order, response: Discounts | None) -> dict[str, Any]:
    """What each event says of its prediction (``buttress insights`` queries it): the order's
    value, its sub-orders, the discount handed out, the mean discount and the app version."""
    subs = order.sub_orders
    values = [s.price * s.quantity for s in subs]
    if response is None:
        return {"order_value": round(sum(values), 2), "sub_orders": len(subs),
                "discount_value": None, "mean_discount_pct": None,
                "app_version": order.user.app_version}
    pcts = [d.discount_pct for d in response.discounts]
    return {
        "order_value": round(sum(values), 2),
        "sub_orders": len(subs),
        "discount_value": round(sum(v * p for v, p in zip(values, pcts, strict=True)) / 100, 2),
        "mean_discount_pct": round(sum(pcts) / len(pcts), 3) if pcts else None,
        "app_version": order.user.app_version,
    }


@svc.respond
def respond(order: Order, discount_model: np.ndarray) -> Discounts:
    pct = clip_discount(np.asarray(discount_model, dtype=np.float64))
    return Discounts(order_id=order.order_id, discounts=[
        Discount(sub_order_id=sub.sub_order_id, discount_pct=round(float(p), 2))
        for sub, p in zip(order.sub_orders, pct, strict=True)])
