"""Seeded synthetic world for the discount demo: users, products, orders and the true discount.

Everything here is a pure function of its seed (numpy ``Generator``s, no global RNG), so two runs
produce identical data and the model versions trained from it are reproducible.

The ground truth treats an unknown user or product exactly as serving does: through the default
features. The world knows no more about a stranger than the feature store does, so a model trained
on it learns what it can be asked at serving time.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Mapping
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

N_USERS = 5000
N_PRODUCTS = 2000
N_CATEGORIES = 12
USER_SEED = 20_001
PRODUCT_SEED = 20_002
TRAIN_ORDERS_SEED = 20_003
HOLDOUT_ORDERS_SEED = 20_004

USER_FEATURES = ("orders_count", "return_rate", "tenure_days")
PRODUCT_FEATURES = ("category", "rating", "price_band")

# A stranger looks like a brand-new customer with a typical return rate.
USER_DEFAULTS: Mapping[str, float] = {"orders_count": 0, "return_rate": 0.15, "tenure_days": 0}
# An unknown product gets its own category code (-1) rather than pretending to be category 0.
PRODUCT_DEFAULTS: Mapping[str, float] = {"category": -1, "rating": 4.0, "price_band": 2}

# Price bands (currency units): band b covers [edges[b], edges[b + 1]).
PRICE_BAND_EDGES = (50.0, 150.0, 400.0, 1000.0, 2500.0, 5000.0)
# Per category: typical price band, typical seller margin, and how much extra discount it carries.
_CATEGORY_BAND = (0, 1, 4, 3, 2, 1, 0, 2, 3, 1, 2, 4)
_CATEGORY_MARGIN = (0.35, 0.30, 0.08, 0.12, 0.22, 0.28, 0.40, 0.18, 0.10, 0.25, 0.20, 0.06)
_CATEGORY_OFFSET = (1.5, 0.5, -2.0, -1.0, 0.0, 1.0, 2.5, 0.0, -1.5, 0.5, 1.0, -2.5)
_APP_MAJORS = (3, 4, 5, 6)
_APP_MAJOR_P = (0.10, 0.25, 0.45, 0.20)

Features = dict[int, dict[str, float]]


def generate_users(seed: int = USER_SEED, n: int = N_USERS) -> Features:
    """User features for ids 1..n: order history, return rate and tenure."""
    rng = np.random.default_rng(seed)
    orders = rng.negative_binomial(1.3, 0.08, size=n)
    returns = rng.beta(2.0, 12.0, size=n)
    # Tenure grows with order history: loyal users are old users, with plenty of scatter.
    tenure = np.clip(orders * 25 + rng.gamma(2.0, 150.0, size=n), 0, 3650).astype(np.int64)
    return {
        i + 1: {
            "orders_count": int(orders[i]),
            "return_rate": round(float(returns[i]), 4),
            "tenure_days": int(tenure[i]),
        }
        for i in range(n)
    }


def generate_products(seed: int = PRODUCT_SEED, n: int = N_PRODUCTS) -> Features:
    """Product features for ids 1..n: category code, rating and price band."""
    rng = np.random.default_rng(seed)
    category = rng.integers(0, N_CATEGORIES, size=n)
    band = np.clip(np.take(_CATEGORY_BAND, category) + rng.integers(-1, 2, size=n), 0, 4)
    rating = np.clip(np.round(rng.normal(4.0, 0.6, size=n), 1), 1.0, 5.0)
    return {
        i + 1: {
            "category": int(category[i]),
            "rating": float(rating[i]),
            "price_band": int(band[i]),
        }
        for i in range(n)
    }


def generate_orders(
    n: int, seed: int = TRAIN_ORDERS_SEED, products: Features | None = None
) -> list[dict[str, Any]]:
    """``n`` order requests in the demo contract shape, each with 1 to 8 sub-orders.

    About 3% of users and 2% of products are unknown to the feature store, and 5% of apps
    report no version, so the defaults are exercised the way real traffic would. Prices follow
    the product's price band (50..5000), margins its category. Drawn as whole arrays (a numpy
    call per value would make this the slowest step of training).
    """
    products = generate_products() if products is None else products
    rng = np.random.default_rng(seed)
    user_ids = np.where(
        rng.random(n) >= 0.03,
        rng.integers(1, N_USERS + 1, size=n),
        rng.integers(N_USERS + 1, N_USERS + 1000, size=n),
    )
    versions = [
        f"{major}.{minor}.{patch}"
        for major, minor, patch in zip(
            rng.choice(_APP_MAJORS, p=_APP_MAJOR_P, size=n).tolist(),
            rng.integers(0, 21, size=n).tolist(),
            rng.integers(0, 10, size=n).tolist(),
            strict=True,
        )
    ]
    no_version = rng.random(n) < 0.05
    n_subs = np.minimum(rng.geometric(0.45, size=n), 8)
    m = int(n_subs.sum())

    # Sub-order columns, all m at once; an unknown product gets a random band and category.
    product_ids = np.where(
        rng.random(m) >= 0.02,
        rng.integers(1, N_PRODUCTS + 1, size=m),
        rng.integers(N_PRODUCTS + 1, N_PRODUCTS + 500, size=m),
    )
    table_band, table_category = _product_tables(products, int(product_ids.max()) + 1)
    known = table_band[product_ids] >= 0
    band = np.where(known, table_band[product_ids], rng.integers(0, 5, size=m))
    category = np.where(known, table_category[product_ids], rng.integers(0, N_CATEGORIES, size=m))
    log_edges = np.log(np.asarray(PRICE_BAND_EDGES))
    prices = np.round(np.exp(rng.uniform(log_edges[band], log_edges[band + 1])), 2)
    margins = np.round(
        np.clip(np.take(_CATEGORY_MARGIN, category) + rng.normal(0.0, 0.06, size=m), 0.0, 0.6), 3
    )
    quantities = np.where(band <= 2, 1 + rng.poisson(0.4, size=m), 1)

    columns = zip(
        product_ids.tolist(), prices.tolist(), margins.tolist(), quantities.tolist(), strict=True
    )
    orders: list[dict[str, Any]] = []
    for i, (user_id, version, unknown, count) in enumerate(
        zip(user_ids.tolist(), versions, no_version.tolist(), n_subs.tolist(), strict=True)
    ):
        subs = [
            {
                "sub_order_id": f"so-{i + 1}-{j + 1}",
                "product_id": pid,
                "price": price,
                "margin": margin,
                "quantity": quantity,
            }
            for j, (pid, price, margin, quantity) in enumerate(islice(columns, count))
        ]
        orders.append(
            {
                "order_id": f"o-{i + 1}",
                "user": {"id": user_id, "app_version": "unknown" if unknown else version},
                "sub_orders": subs,
            }
        )
    return orders


def _product_tables(products: Features, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Band and category indexed by product id; -1 where the id is unknown."""
    band = np.full(max(size, max(products, default=0) + 1), -1, dtype=np.int64)
    category = band.copy()
    for pid, features in products.items():
        band[pid] = features["price_band"]
        category[pid] = features["category"]
    return band, category


def true_discount_pct(
    columns: Mapping[str, np.ndarray], rng: np.random.Generator | None = None
) -> np.ndarray:
    """The discount (percent, 0..30) the business would have chosen; noisy when ``rng`` is given.

    ``columns`` maps each of the model's feature names (``orders_count``, ``return_rate``,
    ``tenure_days``, ``app_major``, ``category``, ``rating``, ``price``, ``margin``,
    ``quantity``) to an array. Margin is the room to discount (and caps it, so the seller keeps
    a tenth of the margin); loyal, long-standing users with few returns get more; poorly rated
    products, bulk quantities and the newer app's promotions add a little; expensive items get a
    smaller percentage. The price band is not used: it is a coarse echo of the exact price.
    """
    c = columns
    offsets = np.append(np.asarray(_CATEGORY_OFFSET), 0.0)  # index -1: unknown category -> 0
    pct = (
        2.0
        + 35.0 * c["margin"]
        + 4.0 * np.tanh(c["orders_count"] / 20.0)
        + 2.0 * np.minimum(c["tenure_days"] / 730.0, 1.0)
        - 18.0 * c["return_rate"]
        + 1.5 * (4.0 - c["rating"])
        + np.take(offsets, c["category"].astype(np.int64))
        - 1.5 * np.log10(np.maximum(c["price"], 1.0) / 100.0)
        + np.minimum(c["quantity"] - 1.0, 3.0)
        + np.where(c["app_major"] >= 5, 1.5, 0.0)
    )
    pct = np.minimum(pct, 90.0 * c["margin"])
    if rng is not None:
        pct = pct + rng.normal(0.0, 1.0, size=pct.shape)
    clipped: np.ndarray = np.clip(pct, 0.0, 30.0)
    return clipped


def write_feature_csvs(directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``users.csv`` and ``products.csv`` (an ``id`` column, then one column per feature)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    users_csv = _write_csv(out / "users.csv", USER_FEATURES, generate_users())
    products_csv = _write_csv(out / "products.csv", PRODUCT_FEATURES, generate_products())
    return users_csv, products_csv


def _write_csv(path: Path, columns: tuple[str, ...], rows: Features) -> Path:
    # Temp file + rename: a reader (or a second writer) never sees a half-written file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(("id", *columns))
            for key in sorted(rows):
                writer.writerow((key, *(rows[key][c] for c in columns)))
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; these are not secrets
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
