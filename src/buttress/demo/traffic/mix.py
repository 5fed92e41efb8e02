"""What the demo traffic sends: realistic requests in a seeded mix, shaped by timed episodes.

The mix, one draw per request (weights in :class:`Mix`); the server's answer after the arrow:

- ``valid``: an order from :func:`buttress.demo.data.generate_orders` -> 200 (that pool already
  has ~3% unknown users and ~2% unknown products, so some carry ``features_missing``)
- ``renamed_key``: ``seller_margin`` instead of ``margin`` -> 200, absorbed by an alias
- ``wrong_type``: ``"quantity": "two"``, ``"margin": "high"`` or a numeric ``app_version``
  -> 200 with the field's default, ``input_contract``
- ``unknown_key``: keys the contract does not know (``coupon_code``, ...) -> 200, drift
- ``unknown_ids``: a user id above 5000 and/or a product id above 2000 -> 200, ``features_missing``
- ``missing_field``: a required field removed -> 422
- ``malformed_json``: a truncated body -> 400

Episodes, by time since the start (:class:`Episodes`): a burst (every 20 s, 3 s at 5x the rate);
a model outage (every 45 s from 25 s on, 2 s in which every order id starts with ``fail-model``:
``model_error`` until the model's breaker opens, then ``model_unavailable`` until it closes); and
1% of requests with ``X-Deadline-Ms: 1`` (``model_timeout``).

Everything here is a pure function of the seed and the times asked about: no clock, no I/O.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import orjson

from buttress.demo.data import N_PRODUCTS, N_USERS, generate_orders

UNKNOWN_USER_IDS = (N_USERS + 1, 9999)  # the demo knows users 1..5000
UNKNOWN_PRODUCT_IDS = (N_PRODUCTS + 1, 2999)  # and products 1..2000
DEMO_ORDER_POOL = 2000


class Kind(StrEnum):
    VALID = "valid"
    RENAMED_KEY = "renamed_key"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_KEY = "unknown_key"
    UNKNOWN_IDS = "unknown_ids"
    MISSING_FIELD = "missing_field"
    MALFORMED_JSON = "malformed_json"


@dataclass(frozen=True)
class Mix:
    """Relative weight of each request kind (they need not sum to 1)."""

    valid: float = 0.80
    renamed_key: float = 0.04
    wrong_type: float = 0.04
    unknown_key: float = 0.04
    unknown_ids: float = 0.04
    missing_field: float = 0.02
    malformed_json: float = 0.02

    def __post_init__(self) -> None:
        weights = [getattr(self, f.name) for f in fields(self)]
        if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError("Mix weights must be finite, non-negative, and not all zero")

    def kinds(self) -> tuple[tuple[Kind, ...], tuple[float, ...]]:
        """The kinds and their cumulative weights, for ``random.choices``."""
        kinds = tuple(Kind(f.name) for f in fields(self))
        total, cumulative = 0.0, []
        for kind in kinds:
            total += getattr(self, kind.value)
            cumulative.append(total)
        return kinds, tuple(cumulative)


@dataclass(frozen=True)
class Episodes:
    """Time-driven events: bursts, model outages, tight deadlines. ``*_for=0`` turns one off."""

    burst_start: float = 10.0
    burst_every: float = 20.0
    burst_for: float = 3.0
    burst_factor: float = 5.0
    outage_start: float = 25.0
    outage_every: float = 45.0
    outage_for: float = 2.0
    tight_deadline_share: float = 0.01
    tight_deadline_ms: int = 1

    def __post_init__(self) -> None:
        for name in ("burst", "outage"):
            start, every, length = (getattr(self, f"{name}_{p}") for p in ("start", "every", "for"))
            if not (start >= 0 and every > 0 and 0 <= length <= every):  # NaN fails too
                raise ValueError(f"Episodes: need {name}_start >= 0, {name}_every > 0 and "
                                 f"0 <= {name}_for <= {name}_every")
        if not self.burst_factor >= 1:
            raise ValueError("Episodes.burst_factor must be at least 1")
        if not 0 <= self.tight_deadline_share <= 1 or self.tight_deadline_ms < 1:
            raise ValueError("Episodes: tight_deadline_share in [0, 1], tight_deadline_ms >= 1")

    def in_burst(self, elapsed: float) -> bool:
        return _in_window(elapsed, self.burst_start, self.burst_every, self.burst_for)

    def in_outage(self, elapsed: float) -> bool:
        return _in_window(elapsed, self.outage_start, self.outage_every, self.outage_for)

    def rate_factor(self, elapsed: float) -> float:
        return self.burst_factor if self.in_burst(elapsed) else 1.0


def _in_window(elapsed: float, start: float, every: float, length: float) -> bool:
    return length > 0 and elapsed >= start and (elapsed - start) % every < length


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    kind: Kind
    body: bytes
    headers: Mapping[str, str]
    model_failure: bool
    tight_deadline: bool


class TrafficGenerator:
    """Turns a pool of valid orders into the mix; a pure function of the seed and the times."""

    def __init__(self, orders: Sequence[Mapping[str, Any]], *, seed: int, mix: Mix | None = None,
                 episodes: Episodes | None = None) -> None:
        if not orders:
            raise ValueError("TrafficGenerator needs at least one valid order")
        # Serialized once: a copy per request is then one orjson.loads, not a deepcopy.
        self._pool = [orjson.dumps(order) for order in orders]
        self._rng = random.Random(seed)
        self._kinds, self._cumulative = (mix or Mix()).kinds()
        self.episodes = episodes or Episodes()
        self._serial = 0

    def next(self, elapsed: float) -> PlannedRequest:
        """The request to send ``elapsed`` seconds into the run."""
        rng, episodes = self._rng, self.episodes
        self._serial += 1
        kind = rng.choices(self._kinds, cum_weights=self._cumulative)[0]
        order: dict[str, Any] = orjson.loads(rng.choice(self._pool))
        outage = episodes.in_outage(elapsed)
        if outage:
            order["order_id"] = f"fail-model-{self._serial}"
        body = _SHAPES[kind](order, rng)
        tight = rng.random() < episodes.tight_deadline_share
        headers = {"x-deadline-ms": str(episodes.tight_deadline_ms)} if tight else {}
        return PlannedRequest(kind, body, headers, outage, tight)


def _valid(order: dict[str, Any], rng: random.Random) -> bytes:
    return orjson.dumps(order)


def _renamed_key(order: dict[str, Any], rng: random.Random) -> bytes:
    for sub in order["sub_orders"]:
        if "margin" in sub:
            sub["seller_margin"] = sub.pop("margin")
    return orjson.dumps(order)


def _wrong_type(order: dict[str, Any], rng: random.Random) -> bytes:
    sub = rng.choice(order["sub_orders"])
    target, value = rng.choice(((sub, ("quantity", "two")), (sub, ("margin", "high")),
                                (order["user"], ("app_version", 5.12))))
    target[value[0]] = value[1]
    return orjson.dumps(order)


def _unknown_key(order: dict[str, Any], rng: random.Random) -> bytes:
    target, key, value = rng.choice(((order, "coupon_code", "SPRING10"),
                                     (order["user"], "device", "android"),
                                     (rng.choice(order["sub_orders"]), "gift_wrap", True)))
    target[key] = value
    return orjson.dumps(order)


def _unknown_ids(order: dict[str, Any], rng: random.Random) -> bytes:
    which = rng.choice(("user", "product", "both"))
    if which != "product":
        order["user"]["id"] = rng.randint(*UNKNOWN_USER_IDS)
    if which != "user":
        rng.choice(order["sub_orders"])["product_id"] = rng.randint(*UNKNOWN_PRODUCT_IDS)
    return orjson.dumps(order)


def _missing_field(order: dict[str, Any], rng: random.Random) -> bytes:
    sub = rng.choice(order["sub_orders"])
    target, key = rng.choice(((order, "order_id"), (order, "user"), (order, "sub_orders"),
                              (order["user"], "id"), (sub, "price"), (sub, "product_id")))
    del target[key]
    return orjson.dumps(order)


def _malformed_json(order: dict[str, Any], rng: random.Random) -> bytes:
    body = orjson.dumps(order)
    return body[: rng.randint(1, len(body) - 1)]  # no proper prefix of an object is valid JSON


_SHAPES: dict[Kind, Callable[[dict[str, Any], random.Random], bytes]] = {
    Kind.VALID: _valid, Kind.RENAMED_KEY: _renamed_key, Kind.WRONG_TYPE: _wrong_type,
    Kind.UNKNOWN_KEY: _unknown_key, Kind.UNKNOWN_IDS: _unknown_ids,
    Kind.MISSING_FIELD: _missing_field, Kind.MALFORMED_JSON: _malformed_json,
}




def demo_orders(seed: int, n: int = DEMO_ORDER_POOL) -> list[dict[str, Any]]:
    """``n`` valid demo orders from :func:`buttress.demo.data.generate_orders`."""
    return generate_orders(n, seed=seed)
