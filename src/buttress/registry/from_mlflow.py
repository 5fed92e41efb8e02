"""Import a model that MLflow saved: a local model directory holding an ``MLmodel`` file.

    mlflow artifacts download -u models:/discount/3 -d ./discount-3
    buttress models import discount ./discount-3     # the directory holding the MLmodel file

MLflow itself is not needed, and not used: its loaders unpickle whatever the flavor saved
(MLflow's CVE-2024-37052 … 37060). The ``MLmodel`` file is read as YAML data
(``yaml.safe_load``, no tags that build objects) and the flavor's one artifact file is
registered like any other, under buttress's rules:

- ``onnx`` flavor → its ``data`` file, format ``onnx``;
- ``lightgbm`` flavor of a ``lightgbm.basic.Booster`` → its text model, format ``lightgbm``;
- ``lightgbm`` of the scikit-learn API, and ``sklearn`` → a (cloud)pickle, format ``joblib``:
  refused unless ``--allow-pickle``, as any pickle is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

BOOSTER = "lightgbm.basic.Booster"


@dataclass(frozen=True)
class MlflowArtifact:
    """The file to register, its format, and notes saying where it came from."""

    path: Path
    format: str
    notes: str


def find_artifact(model_dir: Path) -> MlflowArtifact:
    """The loadable artifact of the MLflow model in ``model_dir``; ``ValueError`` says why
    there is none."""
    import yaml

    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        raise ValueError(f"{model_dir} holds no MLmodel file: point at the MLflow model "
                         "directory (e.g. the 'model' folder of a run's artifacts)")
    document = yaml.safe_load(mlmodel.read_text())
    flavors: dict[str, Any] = (document or {}).get("flavors") or {}
    if "onnx" in flavors:
        flavor, file, format = "onnx", flavors["onnx"].get("data"), "onnx"
    elif "lightgbm" in flavors:
        conf = flavors["lightgbm"]
        flavor, file = "lightgbm", conf.get("data")
        format = "lightgbm" if conf.get("model_class", BOOSTER) == BOOSTER else "joblib"
    elif "sklearn" in flavors:
        flavor, file, format = "sklearn", flavors["sklearn"].get("pickled_model"), "joblib"
    else:
        raise ValueError(f"MLflow flavors {', '.join(flavors) or 'none'}: buttress imports "
                         "onnx, lightgbm and sklearn models")
    path = _inside(model_dir, file)
    origin = f"run {document['run_id']}, " if document.get("run_id") else ""
    return MlflowArtifact(path, format, f"imported from MLflow ({origin}{flavor} flavor)")


def _inside(model_dir: Path, file: object) -> Path:
    """The flavor's file, which must be a file inside the model directory: an MLmodel is
    input, and ``data: ../../etc/passwd`` must not register whatever it names."""
    if not isinstance(file, str) or not file:
        raise ValueError("the MLmodel file names no model file for its flavor")
    root = model_dir.resolve()
    path = (root / file).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise ValueError(f"the MLmodel file names {file!r}, not a file inside {model_dir}")
    return path
