"""In-process runners: each gives what calling its model directly gives, off the event loop,
with the native thread pools of each model thread capped at ``native_threads``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_info

from buttress.batching import Batch, Batcher
from buttress.runners import (
    OnnxRunner,
    RemoteModel,
    RemoteRunner,
    Runner,
    Signature,
    ThreadRunner,
    TorchRunner,
    as_runner,
)

FEATURES = 8


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(64, FEATURES))


@pytest.fixture(scope="module")
def regressor(rows: np.ndarray) -> HistGradientBoostingRegressor:
    target = rows @ np.arange(1.0, FEATURES + 1) + np.sin(rows[:, 0])
    return HistGradientBoostingRegressor(max_iter=20, random_state=0).fit(rows, target)


@pytest.fixture(scope="module")
def linear(rows: np.ndarray) -> Any:
    """What the ONNX tests export (skl2onnx 1.20 fails on HistGradientBoosting's trees under
    protobuf 7: "Expected an int, got a boolean")."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), Ridge()).fit(rows, rows @ np.arange(1.0, FEATURES + 1))


@pytest.fixture
def closing() -> Iterator[list[Runner]]:
    """Runners to close after the test."""
    runners: list[Runner] = []
    yield runners
    for runner in runners:
        runner.close()


def onnx_session(model: Any, threads: int = 0) -> Any:
    ort = pytest.importorskip("onnxruntime")
    skl2onnx = pytest.importorskip("skl2onnx")
    proto = skl2onnx.to_onnx(model, np.zeros((1, FEATURES), dtype=np.float32))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(proto.SerializeToString(), sess_options=options,
                                providers=["CPUExecutionProvider"])


def mlp() -> Any:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 1))


# --- same predictions as the model called directly ---------------------------------------


@pytest.mark.parametrize("n", [1, 64])
async def test_scikit_learn_runner_matches_predict(
        regressor: HistGradientBoostingRegressor, rows: np.ndarray, n: int,
        closing: list[Runner]) -> None:
    runner = as_runner(regressor, threads=2, native_threads=1)
    closing.append(runner)
    assert isinstance(runner, ThreadRunner)
    np.testing.assert_array_equal(await runner.run(rows[:n]), regressor.predict(rows[:n]))


def lightgbm_models(rows: np.ndarray) -> list[Any]:
    """A LightGBM model through its scikit-learn API and as a native Booster."""
    lightgbm = pytest.importorskip("lightgbm")
    target = rows @ np.arange(1.0, FEATURES + 1)
    estimator = lightgbm.LGBMRegressor(n_estimators=20, min_child_samples=5, verbose=-1)
    estimator.fit(rows, target)
    booster = lightgbm.train({"objective": "regression", "min_data_in_leaf": 5, "verbose": -1},
                             lightgbm.Dataset(rows, target), num_boost_round=20)
    return [estimator, booster]


async def test_lightgbm_models_run_batched_as_they_predict(
        rows: np.ndarray, closing: list[Runner]) -> None:
    for model in lightgbm_models(rows):
        runner = as_runner(model, threads=2, native_threads=1)
        closing.append(runner)
        assert isinstance(runner, ThreadRunner)
        assert runner.signature().features == FEATURES
        batcher = Batcher(Batch(max_size=16, max_wait="5ms"), runner.run)
        answers = await asyncio.gather(*(batcher.submit(rows[i:i + 1]) for i in range(40)))
        np.testing.assert_allclose(np.concatenate(answers), model.predict(rows[:40]))
        assert batcher.stats().batches < 40  # they did share batches


@pytest.mark.parametrize("n", [1, 64])
async def test_onnx_runner_matches_the_session(
        linear: Any, rows: np.ndarray, n: int, closing: list[Runner]) -> None:
    session = onnx_session(linear)
    runner = as_runner(session, threads=2, native_threads=1)
    closing.append(runner)
    assert isinstance(runner, OnnxRunner)
    batch = rows[:n]
    (direct,) = session.run(None, {"X": batch.astype(np.float32)})
    predictions = await runner.run(batch)  # float64 rows: cast to the model's float32
    assert predictions.shape == (n,)
    np.testing.assert_array_equal(predictions, direct[:, 0])
    # the exported model is the scikit-learn one, up to float32 arithmetic
    np.testing.assert_allclose(predictions, linear.predict(batch), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("n", [1, 64])
async def test_torch_runner_matches_the_module(rows: np.ndarray, n: int,
                                               closing: list[Runner]) -> None:
    import torch

    module = mlp()
    runner = as_runner(module, threads=2, native_threads=1)
    closing.append(runner)
    assert isinstance(runner, TorchRunner)
    batch = rows[:n]
    with torch.no_grad():
        direct = module(torch.from_numpy(batch.astype(np.float32))).numpy()
    predictions = await runner.run(batch)
    assert predictions.shape == (n,)
    assert predictions.dtype == np.float32
    np.testing.assert_allclose(predictions, direct[:, 0], rtol=1e-6)


async def test_onnx_classifier_returns_its_first_output_or_the_one_named(
        rows: np.ndarray, closing: list[Runner]) -> None:
    from sklearn.linear_model import LogisticRegression

    classifier = LogisticRegression().fit(rows, rows[:, 0] > 0)
    ort = pytest.importorskip("onnxruntime")
    skl2onnx = pytest.importorskip("skl2onnx")
    proto = skl2onnx.to_onnx(classifier, rows[:1].astype(np.float32),
                             options={"zipmap": False})
    session = ort.InferenceSession(proto.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    labels = OnnxRunner(session)
    probabilities = OnnxRunner(session, output="probabilities")
    closing += [labels, probabilities]
    np.testing.assert_array_equal(await labels.run(rows), classifier.predict(rows))
    np.testing.assert_allclose(await probabilities.run(rows), classifier.predict_proba(rows),
                               atol=1e-5)
    with pytest.raises(ValueError, match="no output 'nope'"):
        OnnxRunner(session, output="nope")


# --- native thread caps, per model thread ------------------------------------------------


def _openmp_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "openmp"]


@pytest.mark.parametrize("native_threads", [1, 2])
async def test_thread_runner_caps_openmp_in_each_model_thread(
        regressor: HistGradientBoostingRegressor, rows: np.ndarray, native_threads: int,
        closing: list[Runner]) -> None:
    seen: list[tuple[str, list[int]]] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        seen.append((threading.current_thread().name, _openmp_threads()))
        return regressor.predict(batch)

    runner = ThreadRunner(predict, threads=2, native_threads=native_threads)
    closing.append(runner)
    for _ in range(6):
        await runner.run(rows[:4])
    assert _openmp_threads(), "scikit-learn's OpenMP runtime should be loaded"
    for thread, openmp in seen:
        assert thread.startswith("model")
        assert openmp
        assert set(openmp) == {native_threads}


def test_thread_runner_starts_every_model_thread_before_serving(
        closing: list[Runner]) -> None:
    """A thread's start-up (threadpoolctl's inspection) is paid when the service is built,
    not inside a request: ThreadPoolExecutor would start the second thread lazily."""

    def models() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("model")}

    before = models()
    runner = ThreadRunner(lambda batch: batch[:, 0], threads=3)
    closing.append(runner)
    assert len(models() - before) == 3


class _Recorder:
    """A torch module that records, from inside its forward pass, what torch sees."""

    def __new__(cls) -> Any:
        torch = pytest.importorskip("torch")

        class Recorder(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.linear = torch.nn.Linear(FEATURES, 1)
                self.seen: list[tuple[str, int, bool]] = []

            def forward(self, batch: Any) -> Any:
                self.seen.append((threading.current_thread().name, torch.get_num_threads(),
                                  torch.is_inference_mode_enabled()))
                return self.linear(batch)

        return Recorder()


@pytest.mark.parametrize("native_threads", [1, 2])
async def test_torch_runner_sets_torch_threads_and_inference_mode_per_thread(
        rows: np.ndarray, native_threads: int, closing: list[Runner]) -> None:
    module = _Recorder()
    runner = TorchRunner(module, threads=2, native_threads=native_threads)
    closing.append(runner)
    for _ in range(6):
        await runner.run(rows[:4])
    assert module.seen
    for thread, torch_threads, inference_mode in module.seen:
        assert thread.startswith("model")
        assert torch_threads == native_threads
        assert inference_mode


@pytest.mark.parametrize("native_threads", [1, 2])
def test_onnx_session_gets_an_intra_op_pool_of_native_threads(
        linear: Any, native_threads: int) -> None:
    default = onnx_session(linear)  # intra_op_num_threads 0: one per core
    runner = OnnxRunner(default, native_threads=native_threads)
    try:
        assert runner.session is not default
        assert runner.session.get_session_options().intra_op_num_threads == native_threads
    finally:
        runner.close()
    already = onnx_session(linear, threads=native_threads)
    kept = OnnxRunner(already, native_threads=native_threads)
    kept.close()
    assert kept.session is already


# --- choosing a runner --------------------------------------------------------------------


def test_as_runner_keeps_a_runner_and_builds_one_from_a_declaration() -> None:
    class Custom:
        async def run(self, rows: np.ndarray) -> np.ndarray:
            return rows[:, 0]

        def close(self) -> None:
            pass

    custom = Custom()
    assert as_runner(custom) is custom
    remote = RemoteModel("http://127.0.0.1:1", "m")
    first, second = as_runner(remote), as_runner(remote)
    assert isinstance(first, RemoteRunner)
    assert isinstance(second, RemoteRunner)
    assert first is not second
    assert first.breaker is not second.breaker


def test_as_runner_refuses_what_it_cannot_run() -> None:
    with pytest.raises(TypeError, match="cannot run 42"):
        as_runner(42)


def test_signatures_say_what_each_model_takes(
        regressor: HistGradientBoostingRegressor, linear: Any) -> None:
    runners: list[Any] = [ThreadRunner(regressor), OnnxRunner(onnx_session(linear)),
                          TorchRunner(mlp())]
    try:
        assert runners[0].signature() == Signature(features=FEATURES)
        assert runners[1].signature() == Signature(FEATURES, "float32", "float32", (-1,))
        assert runners[2].signature() == Signature(FEATURES, "float32", "float32", (-1,))
        assert ThreadRunner(lambda rows: rows).signature() == Signature(features=None)
    finally:
        for runner in runners:
            runner.close()


def test_importing_buttress_imports_neither_torch_nor_onnxruntime() -> None:
    code = ("import sys, buttress, buttress.runners, buttress.http.app; "
            "print(sorted({'torch', 'onnxruntime'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
