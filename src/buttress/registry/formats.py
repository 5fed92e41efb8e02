"""Artifact formats, and loaders that do not run code found in the file.

- ``onnx``: a graph of operators, run by ONNX Runtime (``onnxruntime.InferenceSession``).
- ``skops``: scikit-learn objects in a zip of JSON; only types on a trusted list are built.
  Registration lists the file's types outside skops' own safe set and refuses them unless the
  operator passed each one with ``--trust``; loading checks again against that recorded list.
- ``lightgbm``: LightGBM's text model, parsed by ``lightgbm.Booster(model_str=...)``.
- ``joblib``: pickle underneath, and unpickling runs whatever code the file names: MLflow's
  CVE-2024-37052..37060 made a shared model file run code on whoever loaded it, BentoML's
  CVE-2025-27520 and CVE-2025-32375 did the same with pickled request bodies. Refused unless
  allowed twice: when registering (``--allow-pickle``, recorded) and by the code loading it
  (``allow_pickle=True``), and even then only with a matching checksum, which
  :class:`~buttress.registry.artifacts.ArtifactStore` checks first.

Each loader builds the model from the verified bytes, never by reopening the path.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from buttress.registry.errors import PickleRefused, UntrustedTypes
from buttress.registry.records import ModelVersion

EXTENSIONS = {"onnx": "onnx", "skops": "skops", "lightgbm": "txt", "joblib": "joblib"}
"""Format -> the extension its artifact is stored under."""

FORMATS = tuple(EXTENSIONS)
PICKLE_FORMATS = frozenset({"joblib"})

_BY_SUFFIX = {".onnx": "onnx", ".skops": "skops", ".txt": "lightgbm", ".lgb": "lightgbm",
              ".joblib": "joblib", ".pkl": "joblib", ".pickle": "joblib"}


def detect_format(path: Path, given: str | None) -> str:
    """``given``, or the format its suffix names."""
    if given is not None:
        if given not in EXTENSIONS:
            raise ValueError(f"format {given!r} must be one of {', '.join(FORMATS)}")
        return given
    try:
        return _BY_SUFFIX[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"cannot tell the format of {path.name}: pass --format "
                         f"({', '.join(FORMATS)})") from None


def check_registrable(name: str, path: Path, format: str, allow_pickle: bool,
                      trusted_types: Iterable[str]) -> None:
    """Refuse, before anything is stored, what could never be loaded safely."""
    if format in PICKLE_FORMATS and not allow_pickle:
        raise PickleRefused(
            f"{path.name} is a {format} (pickle) file, and loading pickle runs code from the "
            "file: register ONNX, skops or LightGBM text instead, or pass --allow-pickle if "
            "you trust where this file came from")
    if format == "skops":
        _check_skops_types(name, path.read_bytes(), trusted_types)


def load_artifact(record: ModelVersion, data: bytes, *, allow_pickle: bool = False,
                  trusted_types: Iterable[str] = ()) -> Any:
    """The model object in ``data`` (already verified against ``record.sha256``)."""
    if record.format == "onnx":
        import onnxruntime

        return onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    if record.format == "skops":
        import skops.io

        trusted = _check_skops_types(record.name, data,
                                     (*record.trusted_types, *trusted_types))
        return skops.io.loads(data, trusted=trusted)
    if record.format == "lightgbm":
        import lightgbm

        return lightgbm.Booster(model_str=data.decode("utf-8"))
    if record.format in PICKLE_FORMATS:
        if not (record.allow_pickle and allow_pickle):
            side = ("was not registered with --allow-pickle" if not record.allow_pickle
                    else "is loaded without allow_pickle=True")
            raise PickleRefused(f"{record.name} {record.version} is a {record.format} (pickle) "
                                f"artifact and {side}; refusing to load it")
        import joblib

        return joblib.load(io.BytesIO(data))
    raise ValueError(f"{record.name} {record.version}: unknown format {record.format!r}")


def _check_skops_types(name: str, data: bytes, trusted_types: Iterable[str]) -> list[str]:
    """The file's types beyond skops' safe defaults; raise if any is not trusted."""
    import skops.io

    found: list[str] = skops.io.get_untrusted_types(data=data)
    trusted = set(trusted_types)
    untrusted = [t for t in found if t not in trusted]
    if untrusted:
        raise UntrustedTypes(
            f"{name}: the skops file holds types nobody trusted: {', '.join(untrusted)}; "
            "review them and register with --trust TYPE for each", untrusted)
    return found
