"""The feature-row layout shared by training and serving, so the two can never drift apart.

``build_rows`` runs once per request on the hot path, so it avoids pandas and per-cell numpy
work: it builds plain Python lists and converts them to one float64 array at the end (float64
because scikit-learn's tree models predict on float64 and would copy anything else).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any, Protocol

import numpy as np

from buttress.demo.data import PRODUCT_DEFAULTS, USER_DEFAULTS

FEATURE_NAMES: tuple[str, ...] = (
    "orders_count",
    "return_rate",
    "tenure_days",
    "app_major",
    "category",
    "rating",
    "price_band",
    "price",
    "margin",
    "quantity",
)
DEFAULT_DISCOUNT_PCT = 0.0
"""The fallback answer: no discount is always safe to give."""
MAX_DISCOUNT_PCT = 30.0

_ORDERS, _RETURNS, _TENURE = (
    USER_DEFAULTS[k] for k in ("orders_count", "return_rate", "tenure_days")
)
_CATEGORY, _RATING, _BAND = (PRODUCT_DEFAULTS[k] for k in ("category", "rating", "price_band"))
_MAX_MAJOR_DIGITS = 6  # int() of a huge digit string is slow, and past 4300 digits it raises


class UserLike(Protocol):
    @property
    def app_version(self) -> str: ...


class SubOrderLike(Protocol):
    @property
    def product_id(self) -> int: ...
    @property
    def price(self) -> float: ...
    @property
    def margin(self) -> float: ...
    @property
    def quantity(self) -> int: ...


class OrderLike(Protocol):
    """What ``build_rows`` reads from an order: the service's validated Input model fits."""

    @property
    def user(self) -> UserLike: ...
    @property
    def sub_orders(self) -> Sequence[SubOrderLike]: ...


def app_major(version: str) -> int:
    """The major number of an app version: ``"5.12.0"`` -> 5; anything unparseable -> -1."""
    head = version.partition(".")[0]
    return int(head) if head.isdecimal() and len(head) <= _MAX_MAJOR_DIGITS else -1


def build_rows(
    order: OrderLike,
    user_features: Mapping[str, float] | None,
    product_features: Sequence[Mapping[str, float] | None],
) -> np.ndarray:
    """One row per sub-order, columns in ``FEATURE_NAMES`` order, shape (n_sub_orders, n_features).

    ``product_features[i]`` belongs to ``order.sub_orders[i]``. ``None`` (an unknown id) or a
    missing key takes the default from ``USER_DEFAULTS`` / ``PRODUCT_DEFAULTS``.
    """
    subs = order.sub_orders
    if len(product_features) != len(subs):
        raise ValueError(f"{len(product_features)} product feature rows for {len(subs)} sub-orders")
    u = USER_DEFAULTS if user_features is None else user_features
    head = [
        u.get("orders_count", _ORDERS),
        u.get("return_rate", _RETURNS),
        u.get("tenure_days", _TENURE),
        app_major(order.user.app_version),
    ]
    rows = []
    for sub, p in zip(subs, product_features, strict=True):
        if p is None:
            p = PRODUCT_DEFAULTS
        rows.append(
            [
                *head,
                p.get("category", _CATEGORY),
                p.get("rating", _RATING),
                p.get("price_band", _BAND),
                sub.price,
                sub.margin,
                sub.quantity,
            ]
        )
    return np.array(rows, dtype=np.float64)


def clip_discount(pct: np.ndarray) -> np.ndarray:
    """Model outputs clipped to the discounts the business allows: [0, 30] percent."""
    clipped: np.ndarray = np.clip(pct, 0.0, MAX_DISCOUNT_PCT)
    return clipped


def as_order(request: Mapping[str, Any]) -> SimpleNamespace:
    """A contract-shaped request dict as an attribute object, with the contract's defaults.

    Training reads its synthetic orders through this, so it goes through ``build_rows`` exactly
    as serving does. (Serving gets the same shape from the service's pydantic Input model.)
    """
    user = request["user"]
    return SimpleNamespace(
        order_id=request["order_id"],
        user=SimpleNamespace(id=user["id"], app_version=user.get("app_version", "unknown")),
        sub_orders=[
            SimpleNamespace(
                sub_order_id=s["sub_order_id"],
                product_id=s["product_id"],
                price=float(s["price"]),
                margin=float(s.get("margin", s.get("seller_margin", 0.0))),
                quantity=int(s.get("quantity", 1)),
            )
            for s in request["sub_orders"]
        ],
    )
