"""``buttress models import``: MLflow model directories, made here the way MLflow writes
them (an ``MLmodel`` YAML file naming the flavor's artifact), imported without MLflow."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner, Result

from buttress.cli.app import app
from buttress.registry.from_mlflow import find_artifact
from tests.model_files import joblib_file, lightgbm_file, onnx_file

RUN_ID = "0f3c9e1d2b7a4c5e8f9a0b1c2d3e4f5a"


@pytest.fixture(autouse=True)
def workdir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in list(os.environ):
        if key.startswith("BUTTRESS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def mlflow_model(folder: Path, flavor: str, body: str, artifact: Path | None) -> Path:
    model_dir = folder / "model"
    model_dir.mkdir()
    if artifact is not None:
        shutil.copy(artifact, model_dir / artifact.name)
    (model_dir / "MLmodel").write_text(
        f"artifact_path: model\nflavors:\n  {flavor}:\n{body}"
        "  python_function:\n    loader_module: mlflow.x\n"
        f"mlflow_version: 2.17.0\nrun_id: {RUN_ID}\n")
    return model_dir


def onnx_model(folder: Path) -> Path:
    return mlflow_model(folder, "onnx", "    data: model.onnx\n    onnx_version: 1.17.0\n",
                        onnx_file(folder))


def booster_model(folder: Path) -> Path:
    return mlflow_model(folder, "lightgbm", "    data: model.lgb\n    lgb_version: 4.5.0\n"
                        "    model_class: lightgbm.basic.Booster\n",
                        lightgbm_file(folder, "model.lgb"))


def sklearn_model(folder: Path) -> Path:
    return mlflow_model(folder, "sklearn", "    pickled_model: model.pkl\n"
                        "    serialization_format: cloudpickle\n    sklearn_version: 1.5.2\n",
                        joblib_file(folder, "model.pkl"))


def imported(*args: str | Path) -> Result:
    return CliRunner().invoke(app, ["models", "import", *map(str, args)])


@pytest.mark.parametrize(("make", "format"), [(onnx_model, "onnx"),
                                              (booster_model, "lightgbm")])
def test_safe_flavors_are_imported_with_where_they_came_from(
        workdir: Path, make: object, format: str) -> None:
    model_dir = make(workdir)  # type: ignore[operator]
    result = imported("discount", model_dir)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"discount v1: imported {format}")
    listed = CliRunner().invoke(app, ["models", "list", "discount", "--json"])
    [version] = orjson.loads(listed.stdout)["models"][0]["versions"]
    assert version["format"] == format
    assert version["notes"] == f"imported from MLflow (run {RUN_ID}, {format} flavor)"


def test_a_pickled_flavor_needs_allow_pickle(workdir: Path) -> None:
    model_dir = sklearn_model(workdir)
    refused = imported("discount", model_dir)
    assert refused.exit_code == 2
    assert "--allow-pickle" in refused.stderr
    assert imported("discount", model_dir, "--allow-pickle").exit_code == 0


def test_the_sklearn_api_of_lightgbm_is_a_pickle(workdir: Path) -> None:
    model_dir = mlflow_model(workdir, "lightgbm", "    data: model.pkl\n"
                             "    model_class: lightgbm.sklearn.LGBMRegressor\n",
                             joblib_file(workdir, "model.pkl"))
    assert find_artifact(model_dir).format == "joblib"


@pytest.mark.parametrize(("flavor", "body", "message"), [
    ("onnx", "    data: ../outside.onnx\n", "not a file inside"),  # exists, outside
    ("onnx", "    data: /etc/hostname\n", "not a file inside"),
    ("onnx", "    onnx_version: 1.17.0\n", "names no model file"),
    ("pytorch", "    model_data: data\n", "buttress imports onnx, lightgbm and sklearn"),
])
def test_what_cannot_be_imported_is_one_line(workdir: Path, flavor: str, body: str,
                                             message: str) -> None:
    onnx_file(workdir, "outside.onnx")
    result = imported("discount", mlflow_model(workdir, flavor, body, None))
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("buttress: error: ")
    assert message in line


def test_a_directory_without_mlmodel_is_refused(workdir: Path) -> None:
    result = imported("discount", workdir)
    assert result.exit_code == 2
    assert "no MLmodel file" in result.stderr
