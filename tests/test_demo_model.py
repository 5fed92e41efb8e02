"""The discount demo's synthetic data, feature rows and trained model versions."""

from __future__ import annotations

import csv
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from buttress.demo import data, train
from buttress.demo.model import (
    FEATURE_NAMES,
    MAX_DISCOUNT_PCT,
    app_major,
    as_order,
    build_rows,
    clip_discount,
)

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}
SAMPLE = {
    "order_id": "o-1",
    "user": {"id": 42, "app_version": "5.12.0"},
    "sub_orders": [
        {"sub_order_id": "so-1", "product_id": 501, "price": 499.0, "margin": 0.18, "quantity": 1},
        {"sub_order_id": "so-2", "product_id": 9999, "price": 80.0, "margin": 0.3, "quantity": 3},
    ],
}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both versions trained once for the module (about half a second on 2 cores)."""
    out = tmp_path_factory.mktemp("artifacts")
    train.ensure_models(out)
    return out


@pytest.fixture(scope="module")
def holdout_rows() -> np.ndarray:
    x, _ = train.dataset(200, seed=777)
    return x


def test_generation_is_deterministic() -> None:
    assert data.generate_users() == data.generate_users()
    assert data.generate_products() == data.generate_products()
    assert data.generate_orders(300) == data.generate_orders(300)
    assert data.generate_orders(300, seed=1) != data.generate_orders(300, seed=2)


def test_features_cover_the_id_ranges_with_sane_values() -> None:
    users, products = data.generate_users(), data.generate_products()
    assert sorted(users) == list(range(1, data.N_USERS + 1))
    assert sorted(products) == list(range(1, data.N_PRODUCTS + 1))
    assert all(0.0 <= u["return_rate"] <= 1.0 and u["tenure_days"] >= 0 for u in users.values())
    assert {p["category"] for p in products.values()} == set(range(data.N_CATEGORIES))
    assert all(1.0 <= p["rating"] <= 5.0 and 0 <= p["price_band"] <= 4 for p in products.values())
    assert set(data.USER_DEFAULTS) == set(data.USER_FEATURES)
    assert set(data.PRODUCT_DEFAULTS) == set(data.PRODUCT_FEATURES)


def test_orders_have_the_contract_shape_and_exercise_defaults() -> None:
    orders = data.generate_orders(2000)
    subs = [s for o in orders for s in o["sub_orders"]]
    assert all(set(o) == {"order_id", "user", "sub_orders"} for o in orders)
    assert all(set(o["user"]) == {"id", "app_version"} for o in orders)
    assert all(1 <= len(o["sub_orders"]) <= 50 for o in orders)
    assert all(
        set(s) == {"sub_order_id", "product_id", "price", "margin", "quantity"} for s in subs
    )
    assert all(50.0 <= s["price"] <= 5000.0 and 0.0 <= s["margin"] <= 0.6 for s in subs)
    assert all(isinstance(s["quantity"], int) and s["quantity"] >= 1 for s in subs)
    assert any(o["user"]["id"] > data.N_USERS for o in orders)
    assert any(s["product_id"] > data.N_PRODUCTS for s in subs)
    assert any(o["user"]["app_version"] == "unknown" for o in orders)


def test_true_discount_rewards_margin_and_loyalty() -> None:
    base = {
        name: np.full(3, float(value))
        for name, value in {
            **data.USER_DEFAULTS,
            **data.PRODUCT_DEFAULTS,
            "app_major": 5,
            "price": 300.0,
            "margin": 0.25,
            "quantity": 1,
        }.items()
    }
    margin = data.true_discount_pct({**base, "margin": np.array([0.05, 0.2, 0.4])})
    returns = data.true_discount_pct({**base, "return_rate": np.array([0.0, 0.2, 0.5])})
    loyal = data.true_discount_pct({**base, "orders_count": np.array([0.0, 10.0, 60.0])})
    assert np.all(np.diff(margin) > 0)
    assert np.all(np.diff(returns) < 0)
    assert np.all(np.diff(loyal) > 0)
    noisy = data.true_discount_pct(
        {k: np.repeat(v, 1000) for k, v in base.items()}, rng=np.random.default_rng(0)
    )
    assert noisy.min() >= 0.0
    assert noisy.max() <= MAX_DISCOUNT_PCT
    assert noisy.std() > 0.5


@pytest.mark.parametrize(
    ("version", "major"),
    [
        ("5.12.0", 5),
        ("12", 12),
        ("0.1", 0),
        ("unknown", -1),
        ("", -1),
        ("v5.1", -1),
        (" 5.1", -1),
        ("9" * 5000 + ".0", -1),
    ],
)
def test_app_major(version: str, major: int) -> None:
    assert app_major(version) == major


def test_build_rows_layout_and_defaults() -> None:
    order = SimpleNamespace(
        user=SimpleNamespace(app_version="unknown"),
        sub_orders=[
            SimpleNamespace(product_id=1, price=499.0, margin=0.18, quantity=1),
            SimpleNamespace(product_id=2, price=80.0, margin=0.3, quantity=3),
        ],
    )
    user = {"orders_count": 7, "return_rate": 0.05, "tenure_days": 400}
    rows = build_rows(order, user, [{"category": 3, "rating": 4.5, "price_band": 2}, None])
    assert rows.shape == (2, len(FEATURE_NAMES))
    assert rows.dtype == np.float64
    assert rows[0].tolist() == [7, 0.05, 400, -1, 3, 4.5, 2, 499.0, 0.18, 1]
    defaults = data.PRODUCT_DEFAULTS
    assert rows[1, COL["category"]] == defaults["category"]
    assert rows[1, COL["rating"]] == defaults["rating"]
    assert rows[1, COL["quantity"]] == 3

    rows = build_rows(order, None, [{"rating": 2.0}, {}])
    for name, value in data.USER_DEFAULTS.items():
        assert rows[:, COL[name]].tolist() == [value, value]
    assert rows[0, COL["rating"]] == 2.0
    assert rows[0, COL["price_band"]] == defaults["price_band"]

    with pytest.raises(ValueError):
        build_rows(order, user, [None])


def test_as_order_applies_contract_defaults() -> None:
    order = as_order(
        {
            "order_id": "o",
            "user": {"id": 1},
            "sub_orders": [
                {"sub_order_id": "s", "product_id": 3, "price": 10, "seller_margin": 0.2}
            ],
        }
    )
    assert order.user.app_version == "unknown"
    assert (order.sub_orders[0].margin, order.sub_orders[0].quantity) == (0.2, 1)
    assert build_rows(order, None, [None])[0, COL["app_major"]] == -1


def test_clip_discount() -> None:
    clipped = clip_discount(np.array([-3.0, 0.0, 12.5, 30.0, 41.0]))
    assert clipped.tolist() == [0.0, 0.0, 12.5, 30.0, 30.0]


def test_feature_csvs_have_an_id_column_and_every_feature(tmp_path: Path) -> None:
    users_csv, products_csv = data.write_feature_csvs(tmp_path / "features")
    for path, columns, expected in (
        (users_csv, data.USER_FEATURES, data.generate_users()),
        (products_csv, data.PRODUCT_FEATURES, data.generate_products()),
    ):
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            assert reader.fieldnames == ["id", *columns]
            loaded = {int(r["id"]): {c: float(r[c]) for c in columns} for r in reader}
        assert loaded == expected
    assert not list((tmp_path / "features").glob("*.tmp"))


def test_v2_is_worse_and_more_generous(artifacts: Path, holdout_rows: np.ndarray) -> None:
    metrics = json.loads((artifacts / train.METRICS_FILE).read_text())["versions"]
    assert metrics["v2"]["mae"] > 2 * metrics["v1"]["mae"]
    assert metrics["v2"]["mean_discount_pct"] > metrics["v1"]["mean_discount_pct"] + 2.0
    v1 = clip_discount(train.load_model("v1", artifacts).predict(holdout_rows))
    v2 = clip_discount(train.load_model("v2", artifacts).predict(holdout_rows))
    assert v2.mean() > v1.mean()


def test_training_is_reproducible(
    artifacts: Path, holdout_rows: np.ndarray, tmp_path: Path
) -> None:
    train.ensure_models(tmp_path)
    for version in train.RECIPES:
        first = train.load_model(version, artifacts).predict(holdout_rows)
        second = train.load_model(version, tmp_path).predict(holdout_rows)
        assert np.array_equal(first, second)


def test_ensure_models_is_idempotent(artifacts: Path) -> None:
    files = [*train.ensure_models(artifacts).values(), artifacts / train.METRICS_FILE]
    before = [p.stat().st_mtime_ns for p in files]
    assert train.ensure_models(artifacts) == train.ensure_models(artifacts)
    assert [p.stat().st_mtime_ns for p in files] == before


def test_ensure_models_retrains_when_what_trained_them_changed(
    artifacts: Path, tmp_path: Path
) -> None:
    shutil.copytree(artifacts, tmp_path, dirs_exist_ok=True)
    paths = {version: train.model_path(version, tmp_path) for version in train.RECIPES}
    metrics_path = tmp_path / train.METRICS_FILE
    stale = json.loads(metrics_path.read_text()) | {"fingerprint": "stale"}
    metrics_path.write_text(json.dumps(stale))
    paths["v2"].unlink()
    assert train.ensure_models(tmp_path) == paths
    assert paths["v2"].exists()
    assert json.loads(metrics_path.read_text())["fingerprint"] == train.fingerprint()


def test_the_fingerprint_follows_scikit_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    before = train.fingerprint()
    monkeypatch.setattr(train.sklearn, "__version__", "0.0")
    assert train.fingerprint() != before


def test_models_go_to_the_user_cache_not_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    where = train.default_artifacts_dir()
    assert where == tmp_path / "buttress" / "demo-models" / train.fingerprint()
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert train.default_artifacts_dir().is_relative_to(Path.home() / ".cache")
    assert not train.default_artifacts_dir().is_relative_to(Path(train.__file__).parents[1])


@pytest.mark.slow
def test_concurrent_first_calls_leave_complete_artifacts(tmp_path: Path) -> None:
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(train.ensure_models, [tmp_path, tmp_path]))
    assert results[0] == results[1]
    assert not list(tmp_path.glob(".*.tmp"))
    assert train.load_model("v1", tmp_path).predict(np.zeros((1, len(FEATURE_NAMES)))).shape == (1,)


def test_unknown_version_fails_without_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="v1"):
        train.load_model("v3", tmp_path)
    assert not list(tmp_path.iterdir())
