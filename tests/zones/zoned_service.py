"""The service the two-zone test serves: a feature look-up and a guardrail, both on Redis.

Each request claims one unit for a user. A stage reads the user's features from Redis (falling
back to defaults, ``features_unavailable``), the model grants 1, and a fixed-window guardrail
admits at most ``ZONED_LIMIT`` grants per user (``fail="closed"``: while Redis is away nothing
is granted, so a failover can only cost grants, never add them). The answer names the replica
that served it (``ZONED_REPLICA``), so the test sees which zone answered.

Configured by environment: ``ZONED_SERVICE_NAME`` (its Redis namespace), ``ZONED_LIMIT``,
``ZONED_REPLICA``; the backend by ``BUTTRESS_BACKEND`` (a ``redis+sentinel://`` URL).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

import buttress as bt

LIMIT = float(os.environ.get("ZONED_LIMIT", "30"))
REPLICA = os.environ.get("ZONED_REPLICA", "local")
USERS = bt.FeatureTable("user", {"tier": 0})


class Claim(bt.Input):
    user: str


class Grant(bt.Output):
    user: str
    granted: float
    tier: int
    replica: str


def granted(claim: Claim, grant: Grant) -> float:
    return grant.granted


svc = bt.Service(
    os.environ.get("ZONED_SERVICE_NAME", "zoned"), input=Claim, output=Grant,
    example={"user": "warm-up"},
    guardrails=[bt.FixedWindow("grants_per_user", limit=LIMIT, window="24h", measure=granted,
                               key=lambda claim: claim.user, fail="closed")],
)


@svc.resource
async def features(runtime: bt.Runtime) -> bt.FeatureStore:
    store = bt.FeatureStore(runtime.settings.feature_store_url, [USERS], namespace=svc.name)
    await store.open(runtime.connections)
    await store.put_many("user", {f"u{i}": {"tier": i % 3} for i in range(100)})
    return store


@svc.stage(timeout="50ms", fallback=lambda claim: dict(USERS.defaults),
           category=bt.Category.FEATURES_UNAVAILABLE)
async def user_features(claim: Claim, features: bt.FeatureStore) -> dict[str, Any]:
    return (await features.get_many("user", [claim.user])).rows[0]


@svc.model(model=lambda rows: np.ones(len(rows)), fallback=0.0)
def grant(claim: Claim, user_features: dict[str, Any]) -> np.ndarray:
    return np.array([[float(user_features["tier"])]])


@svc.respond
def respond(claim: Claim, grant: np.ndarray, user_features: dict[str, Any]) -> Grant:
    return Grant(user=claim.user, granted=float(np.asarray(grant).ravel()[0]),
                 tier=int(user_features["tier"]), replica=REPLICA)
