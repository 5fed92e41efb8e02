"""Small model artifacts of every registry format, made on the spot (no download)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ROWS = np.arange(12, dtype=np.float64).reshape(4, 3) / 10
"""Rows every artifact here answers: their predictions are the row sums (or close to it)."""


def _training() -> tuple[np.ndarray, np.ndarray]:
    rows = np.random.default_rng(7).random((200, 3))
    return rows, rows.sum(axis=1)


def lightgbm_file(folder: Path, name: str = "model.txt") -> Path:
    import lightgbm

    rows, target = _training()
    booster = lightgbm.train({"verbose": -1, "num_leaves": 4, "num_threads": 1},
                             lightgbm.Dataset(rows, target), num_boost_round=3)
    path = folder / name
    booster.save_model(str(path))
    return path


def onnx_file(folder: Path, name: str = "model.onnx") -> Path:
    """A graph that sums each row: ``Y = ReduceSum(X, axis 1)``."""
    import onnx
    from onnx import TensorProto, helper

    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["X", "axes"], ["Y"], keepdims=0)], "row_sum",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None])], [axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = folder / name
    onnx.save(model, str(path))
    return path


def skops_file(folder: Path, name: str = "model.skops") -> Path:
    """A linear regression: nothing in it beyond skops' trusted defaults."""
    import skops.io
    from sklearn.linear_model import LinearRegression

    path = folder / name
    skops.io.dump(LinearRegression().fit(*_training()), path)
    return path


def hostile_skops_file(folder: Path, name: str = "hostile.skops") -> Path:
    """A transformer whose function is ``os.system``: what a poisoned upload looks like."""
    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    path = folder / name
    skops.io.dump(FunctionTransformer(func=os.system), path)
    return path


def joblib_file(folder: Path, name: str = "model.joblib") -> Path:
    import joblib
    from sklearn.linear_model import LinearRegression

    path = folder / name
    joblib.dump(LinearRegression().fit(*_training()), path)
    return path
