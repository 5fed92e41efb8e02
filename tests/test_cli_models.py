"""``buttress models ...`` through typer's CliRunner: the operator's side of the registry."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner, Result

from buttress.cli.app import app
from tests.model_files import joblib_file, lightgbm_file
from tests.support import free_port


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No BUTTRESS_* variable of the outer shell; a cwd of our own; a known operator."""
    for key in list(os.environ):
        if key.startswith("BUTTRESS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("getpass.getuser", lambda: "carol")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lightgbm_file(tmp_path_factory.mktemp("artifacts"))


def models(*args: str | Path) -> Result:
    return CliRunner().invoke(app, ["models", *map(str, args)])


def ok(*args: str | Path) -> str:
    result = models(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def listed(*args: str) -> dict[str, object]:
    payload: dict[str, object] = orjson.loads(ok("list", "--json", *args))
    return payload


def test_register_promote_rollback_on_the_default_registry(tmp_path: Path,
                                                           artifact: Path) -> None:
    out = ok("register", "discount", artifact, "--notes", "first cut")
    assert out.startswith("discount v1: registered lightgbm")
    assert "(candidate)" in out
    ok("register", "discount", artifact)
    assert (tmp_path / "var" / "registry.db").is_file()  # the embedded default, under cwd
    assert (tmp_path / "var" / "models" / "discount" / "v2" / "model.txt").is_file()
    assert ok("promote", "discount", "v1", "--reason", "first release").strip() == (
        "discount: promote: stable - -> v1")
    ok("promote", "discount", "v2")
    assert "already stable" in ok("promote", "discount", "v2")
    assert ok("rollback", "discount", "--reason", "conversion fell").strip() == (
        "discount: rollback: stable v2 -> v1")
    [model] = listed()["models"]  # type: ignore[index]
    assert model["aliases"] == {"stable": "v1"}
    history = ok("history", "discount")
    assert "conversion fell" in history
    assert "carol" in history


def test_list_shows_checksum_size_who_and_when(tmp_path: Path, artifact: Path) -> None:
    ok("register", "discount", artifact, "--notes", "first cut")
    [model] = listed("discount")["models"]  # type: ignore[index]
    [version] = model["versions"]
    assert version["registered_by"] == "carol"
    assert version["size"] == artifact.stat().st_size
    assert len(version["sha256"]) == 64
    assert version["notes"] == "first cut"
    table = ok("list", "discount")
    assert version["sha256"][:12] in table
    assert "carol" in table
    assert "candidate" in table
    assert "discount" in ok("list")


def test_the_registry_comes_from_the_settings(tmp_path: Path, artifact: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "svc.toml").write_text(
        f'registry_url = "sqlite:///{tmp_path}/elsewhere.db"\nmodels_dir = "{tmp_path}/m"\n')
    ok("register", "discount", artifact, "--config", tmp_path / "svc.toml")
    assert (tmp_path / "elsewhere.db").is_file()
    assert (tmp_path / "m" / "discount" / "v1").is_dir()
    monkeypatch.setenv("BUTTRESS_REGISTRY_URL", f"sqlite:///{tmp_path}/from-env.db")
    ok("register", "pricing", artifact)
    assert (tmp_path / "from-env.db").is_file()
    assert [m["name"] for m in listed()["models"]] == ["pricing"]  # type: ignore[index]
    assert [m["name"] for m in listed("--registry", f"sqlite:///{tmp_path}/elsewhere.db")[
        "models"]] == ["discount"]  # type: ignore[index]


@pytest.mark.parametrize(("args", "message"), [
    (["promote", "pricing", "v1"], "no model named 'pricing' (registered: discount)"),
    (["promote", "discount", "v9"], "model 'discount' has no version 'v9' (versions: v1)"),
    (["rollback", "discount"], "no earlier stable version"),
    (["rollback", "pricing"], "no model named 'pricing'"),
    (["list", "pricing"], "no model named 'pricing'"),
    (["history", "pricing"], "no model named 'pricing'"),
    (["register", "a/b", "ARTIFACT"], "model name 'a/b' must be"),
    (["register", "discount", "ARTIFACT", "--format", "tf"], "format 'tf' must be one of"),
    (["register", "discount", "ARTIFACT", "--version", "v1"], "already exists"),
    (["register", "discount", "missing.txt"], "missing.txt is not a file"),
    (["list", "--registry", "memory://"], "use sqlite:///path.db or redis://"),
])
def test_errors_are_one_line_with_exit_status_2(args: list[str], message: str,
                                                 artifact: Path) -> None:
    ok("register", "discount", artifact)
    ok("promote", "discount", "v1")
    result = models(*[str(artifact) if a == "ARTIFACT" else a for a in args])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("buttress: error: ")
    assert message in lines[0]


def test_an_unreachable_registry_is_one_line(artifact: Path) -> None:
    result = models("promote", "discount", "v1", "--registry",
                    f"redis://127.0.0.1:{free_port()}/0")
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("buttress: error: registry redis: ")


def test_pickle_needs_allow_pickle_and_is_recorded(tmp_path: Path) -> None:
    path = joblib_file(tmp_path)
    refused = models("register", "legacy", path)
    assert refused.exit_code == 2
    assert "--allow-pickle" in refused.stderr
    ok("register", "legacy", path, "--allow-pickle")
    [model] = listed("legacy")["models"]  # type: ignore[index]
    assert model["versions"][0]["allow_pickle"] is True
