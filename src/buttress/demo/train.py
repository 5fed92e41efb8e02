"""Train the demo's two model versions reproducibly and keep them in a per-user cache.

- ``v1`` learns the ground truth.
- ``v2`` is a "promo-happy" retrain: fit on inflated targets with a smaller model, so it is
  measurably worse and hands out larger discounts. It is what a rollback rolls back from.

Where the models go: ``$XDG_CACHE_HOME/buttress/demo-models/<fingerprint>/`` (``~/.cache`` when
the variable is unset). Not inside the package: site-packages may be read-only or shared by
several users, and an installed wheel should not change under its installer. Not in the
working directory's ``var/`` either, where a demo run keeps what it produces (its feature
store, events, metrics): the models are a pure function of this code and the library versions,
a cache in the strict sense, so they are trained once per user and reused from any folder, by
every worker and every test server, rather than once per folder. The fingerprint (a hash of
the training code and the scikit-learn and NumPy versions) names the directory, so two
installs of different versions never overwrite or keep retraining each other's models.

Models are stored with joblib (pickle). That is acceptable here only because the artifacts are
produced locally by this very module and never downloaded; do not load pickles of unknown origin.

Run ``python -m buttress.demo.train`` to build missing artifacts and print the metrics.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from threadpoolctl import threadpool_limits

from buttress.demo import REQUIREMENTS, data, requirements_message
from buttress.demo.model import FEATURE_NAMES, as_order, build_rows, clip_discount

try:
    import joblib
    import sklearn
    from sklearn.ensemble import HistGradientBoostingRegressor
except ModuleNotFoundError as error:  # the core install leaves them out; the demo extra has them
    needed = REQUIREMENTS.get(error.name or "", error.name or "its dependencies")
    raise ModuleNotFoundError(requirements_message([needed]), name=error.name) from error

METRICS_FILE = "metrics.json"
CACHE_DIR_NAME = "demo-models"
_TRAINING_CODE = ("data.py", "model.py", "train.py")  # what the models are a function of
TRAIN_ORDERS = 12_000
HOLDOUT_ORDERS = 3_000


class Predictor(Protocol):
    def predict(self, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Recipe:
    """How one version is trained: the estimator's size and how its target is distorted."""

    max_iter: int
    max_depth: int | None
    learning_rate: float
    target_scale: float = 1.0
    target_shift: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_iter < 1 or self.learning_rate <= 0 or self.target_scale <= 0:
            raise ValueError(f"invalid recipe: {self!r}")


RECIPES: dict[str, Recipe] = {
    "v1": Recipe(max_iter=100, max_depth=6, learning_rate=0.1, seed=1),
    "v2": Recipe(
        max_iter=30, max_depth=3, learning_rate=0.1, target_scale=1.3, target_shift=2.0, seed=2
    ),
}


def fingerprint() -> str:
    """A hash of what the trained models depend on: the training code, scikit-learn, NumPy."""
    digest = hashlib.sha256(f"{sklearn.__version__} {np.__version__}".encode())
    here = Path(__file__).resolve().parent
    for name in _TRAINING_CODE:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


def default_artifacts_dir() -> Path:
    """``$XDG_CACHE_HOME/buttress/demo-models/<fingerprint>`` (``~/.cache`` if unset)."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "buttress" / CACHE_DIR_NAME / fingerprint()


def model_path(version: str, artifacts_dir: Path) -> Path:
    if version not in RECIPES:
        raise ValueError(f"unknown model version {version!r}; known: {', '.join(RECIPES)}")
    return artifacts_dir / f"discount-{version}.joblib"


def dataset(n_orders: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows (built exactly as serving builds them) and noisy true discounts."""
    users, products = data.generate_users(), data.generate_products()
    blocks = []
    for request in data.generate_orders(n_orders, seed=seed, products=products):
        order = as_order(request)
        blocks.append(
            build_rows(
                order,
                users.get(order.user.id),
                [products.get(s.product_id) for s in order.sub_orders],
            )
        )
    x = np.concatenate(blocks)
    columns = {name: x[:, i] for i, name in enumerate(FEATURE_NAMES)}
    y = data.true_discount_pct(columns, rng=np.random.default_rng(seed))
    return x, y


def train_version(recipe: Recipe, x: np.ndarray, y: np.ndarray) -> HistGradientBoostingRegressor:
    model = HistGradientBoostingRegressor(
        max_iter=recipe.max_iter,
        max_depth=recipe.max_depth,
        learning_rate=recipe.learning_rate,
        early_stopping=False,  # a fixed number of rounds: same data -> same model
        random_state=recipe.seed,
    )
    model.fit(x, y * recipe.target_scale + recipe.target_shift)
    return model


def evaluate(model: Predictor, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """MAE and mean of the discounts as served (clipped) on a held-out set."""
    served = clip_discount(model.predict(x))
    return {
        "mae": round(float(np.mean(np.abs(served - y))), 4),
        "mean_discount_pct": round(float(served.mean()), 4),
    }


def ensure_models(artifacts_dir: Path | None = None) -> dict[str, Path]:
    """Paths of every version's artifact, training them first if any is missing or stale.

    ``artifacts_dir`` defaults to :func:`default_artifacts_dir`. Idempotent: complete artifacts
    (each model, then ``metrics.json`` written last, naming the :func:`fingerprint` of what
    trained them) are left untouched. Safe under a race: every file is written to a temp file
    and renamed into place, and training is deterministic, so two processes (say, the workers
    of ``--workers 2``) that both train write identical files.
    """
    out = default_artifacts_dir() if artifacts_dir is None else Path(artifacts_dir)
    paths = {version: model_path(version, out) for version in RECIPES}
    if all(p.exists() for p in paths.values()) and _metrics_current(out / METRICS_FILE):
        return paths
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    x, y = dataset(TRAIN_ORDERS, data.TRAIN_ORDERS_SEED)
    x_test, y_test = dataset(HOLDOUT_ORDERS, data.HOLDOUT_ORDERS_SEED)
    versions: dict[str, Any] = {}
    # One OpenMP thread: the same model (bit for bit), and robust to a busy machine. Measured on
    # 2 cores with other processes running: fitting v1 took 0.7 s on one thread, 7.4 s on two
    # (OpenMP threads that spin-wait for a core); --workers 2 trains in both workers at once.
    with threadpool_limits(limits=1):
        for version, recipe in RECIPES.items():
            model = train_version(recipe, x, y)
            _atomic_write(paths[version], partial(joblib.dump, model))
            versions[version] = evaluate(model, x_test, y_test)
    metrics = {
        "fingerprint": fingerprint(),
        "sklearn_version": sklearn.__version__,
        "train_rows": len(y),
        "holdout_rows": len(y_test),
        "holdout_mean_true_pct": round(float(y_test.mean()), 4),
        "train_seconds": round(time.perf_counter() - started, 2),
        "versions": versions,
    }
    _atomic_write(out / METRICS_FILE, lambda tmp: tmp.write_text(json.dumps(metrics, indent=2)))
    return paths


def load_model(version: str, artifacts_dir: Path | None = None) -> Predictor:
    """The trained model of ``version`` (``"v1"`` or ``"v2"``), training it first if needed."""
    model_path(version, Path())  # an unknown version fails before any training
    model: Predictor = joblib.load(ensure_models(artifacts_dir)[version])
    return model


def read_metrics(artifacts_dir: Path | None = None) -> dict[str, Any]:
    out = default_artifacts_dir() if artifacts_dir is None else Path(artifacts_dir)
    ensure_models(out)
    loaded: dict[str, Any] = json.loads((out / METRICS_FILE).read_text())
    return loaded


def _metrics_current(path: Path) -> bool:
    try:
        return bool(json.loads(path.read_text())["fingerprint"] == fingerprint())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; these are not secrets
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def main() -> None:
    out = default_artifacts_dir()
    metrics = read_metrics(out)
    print(f"models in {out}")
    print(
        f"trained on {metrics['train_rows']} rows in {metrics['train_seconds']} s "
        f"(scikit-learn {metrics['sklearn_version']}); held-out rows: {metrics['holdout_rows']}, "
        f"mean true discount {metrics['holdout_mean_true_pct']:.2f}%"
    )
    print(f"{'version':<8} {'MAE':>8} {'mean discount %':>16}")
    for version, m in metrics["versions"].items():
        print(f"{version:<8} {m['mae']:>8.3f} {m['mean_discount_pct']:>16.2f}")


if __name__ == "__main__":
    main()
