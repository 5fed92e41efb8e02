"""Artifact formats: the safe ones load and run; pickle needs two opt-ins and a matching
checksum; skops types nobody trusted are refused; ``bt.FromRegistry`` is checked when written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

import buttress as bt
from buttress.registry import (
    ChecksumMismatch,
    PickleRefused,
    Registry,
    UntrustedTypes,
)
from buttress.registry.formats import detect_format, load_artifact
from buttress.runners import as_runner
from tests.model_files import (
    ROWS,
    hostile_skops_file,
    joblib_file,
    lightgbm_file,
    onnx_file,
    skops_file,
)

TREE_PREDICTOR = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    async with Registry(f"sqlite:///{tmp_path}/registry.db",
                        models_dir=tmp_path / "models") as opened:
        yield opened


@pytest.mark.parametrize("make", [onnx_file, skops_file, lightgbm_file],
                         ids=["onnx", "skops", "lightgbm"])
async def test_each_safe_format_loads_into_a_runner(registry: Registry, tmp_path: Path,
                                                    make: object) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    record = await registry.register("m", path, who="alice")
    await registry.promote("m", record.version, who="alice")
    loaded = await registry.load("m")
    runner = as_runner(loaded.model)
    try:
        predictions = np.asarray(await runner.run(ROWS))
    finally:
        runner.close()
    assert predictions.shape == (len(ROWS),)
    if make is not lightgbm_file:  # three small trees are only roughly the sum
        np.testing.assert_allclose(predictions, ROWS.sum(axis=1), rtol=1e-5)


def test_the_format_comes_from_the_suffix_unless_given() -> None:
    assert detect_format(Path("m.onnx"), None) == "onnx"
    assert detect_format(Path("m.TXT"), None) == "lightgbm"
    assert detect_format(Path("m.pkl"), None) == "joblib"
    assert detect_format(Path("m.bin"), "skops") == "skops"
    with pytest.raises(ValueError, match="--format"):
        detect_format(Path("m.bin"), None)
    with pytest.raises(ValueError, match="must be one of"):
        detect_format(Path("m.onnx"), "tensorflow")


# --- pickle ---------------------------------------------------------------------------------


async def test_pickle_is_refused_at_registration_without_opt_in(
        registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(PickleRefused, match="--allow-pickle"):
        await registry.register("m", joblib_file(tmp_path), who="alice")
    assert await registry.names() == []
    assert not (tmp_path / "models" / "m" / "v1").exists()


async def test_pickle_also_needs_the_loading_side_to_opt_in(
        registry: Registry, tmp_path: Path) -> None:
    record = await registry.register("m", joblib_file(tmp_path), who="alice", allow_pickle=True)
    assert record.allow_pickle
    await registry.promote("m", "v1", who="alice")
    with pytest.raises(PickleRefused, match="allow_pickle=True"):
        await registry.load("m")
    loaded = await registry.load_declared(bt.FromRegistry("m", allow_pickle=True))
    assert loaded.model.predict(ROWS).shape == (len(ROWS),)


async def test_opted_in_pickle_still_needs_its_checksum(registry: Registry,
                                                        tmp_path: Path) -> None:
    record = await registry.register("m", joblib_file(tmp_path), who="alice", allow_pickle=True)
    await registry.promote("m", "v1", who="alice")
    stored = registry.artifacts.path_of(record)
    stored.write_bytes(stored.read_bytes() + b"\x00")  # a byte more: a different pickle
    with pytest.raises(ChecksumMismatch):
        await registry.load("m", allow_pickle=True)


async def test_a_pickle_relabelled_as_another_format_is_never_unpickled(
        registry: Registry, tmp_path: Path) -> None:
    await registry.register("m", joblib_file(tmp_path), who="alice", format="lightgbm")
    await registry.promote("m", "v1", who="alice")
    with pytest.raises(Exception) as failure:  # LightGBM's parser rejects it; nothing runs
        await registry.load("m")
    assert not isinstance(failure.value, PickleRefused)


# --- skops ----------------------------------------------------------------------------------


async def test_skops_types_nobody_trusted_are_refused_at_registration(
        registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(UntrustedTypes, match=r"posix\.system") as refused:
        await registry.register("m", hostile_skops_file(tmp_path), who="alice")
    assert refused.value.types == ["posix.system"]
    assert await registry.names() == []


async def test_skops_types_trusted_at_registration_load(registry: Registry,
                                                       tmp_path: Path) -> None:
    import skops.io
    from sklearn.ensemble import HistGradientBoostingRegressor

    path = tmp_path / "hgb.skops"
    model = HistGradientBoostingRegressor(max_iter=3).fit(ROWS, ROWS.sum(axis=1))
    skops.io.dump(model, path)
    with pytest.raises(UntrustedTypes):
        await registry.register("m", path, who="alice")
    record = await registry.register("m", path, who="alice", trusted_types=[TREE_PREDICTOR])
    assert record.trusted_types == (TREE_PREDICTOR,)
    await registry.promote("m", "v1", who="alice")
    assert (await registry.load("m")).model.predict(ROWS).shape == (len(ROWS),)


def test_the_loader_checks_skops_types_again(tmp_path: Path) -> None:
    """Defence in depth: even bytes that passed the checksum are built only from trusted
    types (a record written by hand, or an older registry, cannot smuggle ``os.system``)."""
    from buttress.registry import ModelVersion

    data = hostile_skops_file(tmp_path).read_bytes()
    record = ModelVersion("m", "v1", 1, "skops", "0" * 64, len(data), "m/v1/model.skops",
                          "alice", 0.0)
    with pytest.raises(UntrustedTypes):
        load_artifact(record, data)


# --- the declaration ------------------------------------------------------------------------


def test_from_registry_is_checked_when_written_and_reads_well() -> None:
    declared = bt.FromRegistry("discount", alias="stable")
    assert repr(declared) == "FromRegistry('discount', alias='stable')"
    assert repr(bt.FromRegistry("d", alias="candidate", registry="redis://:pw@h:6379/0",
                                allow_pickle=True, trusted_types=("a.B",))) == (
        "FromRegistry('d', alias='candidate', registry='redis://:***@h:6379/0', "
        "allow_pickle=True, trusted_types=('a.B',))")
    with pytest.raises(dataclasses.FrozenInstanceError):
        declared.alias = "previous"  # type: ignore[misc]
    for bad in ({"name": "a/b"}, {"name": "d", "alias": "production"},
                {"name": "d", "registry": "memory://"}, {"name": "d", "registry": "http://x"}):
        with pytest.raises(ValueError):
            bt.FromRegistry(**bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        bt.FromRegistry("d", trusted_types="a.B")  # type: ignore[arg-type]
    assert bt.FromRegistry("d", trusted_types=["a.B"]).trusted_types == ("a.B",)  # type: ignore[arg-type]
