"""docs/registry.md, run as written: its command walk-through through the CLI and its Python
example against a rollback. A doc that drifts from the product fails here."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from buttress.cli.app import app
from buttress.registry import Registry
from tests.model_files import lightgbm_file

DOC = Path(__file__).resolve().parents[1] / "docs" / "registry.md"


def block(language: str, after: str) -> str:
    text = DOC.read_text()
    found = re.search(rf"{re.escape(after)}.*?```{language}\n(.*?)```", text, re.S)
    assert found is not None, f"docs/registry.md lost its {language} block after {after!r}"
    return found.group(1)


@pytest.fixture(autouse=True)
def workdir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in list(os.environ):
        if key.startswith("BUTTRESS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    model = lightgbm_file(tmp_path)
    shutil.copy(model, tmp_path / "model-v1.txt")
    shutil.copy(model, tmp_path / "model-v2.txt")
    return tmp_path


def test_the_rollback_walk_through_does_what_it_says() -> None:
    runner = CliRunner()
    for line in block("bash", "## Rolling back by hand").splitlines():
        args = shlex.split(line, comments=True)
        assert args[:2] == ["buttress", "models"], line
        result = runner.invoke(app, args[1:])
        assert result.exit_code == 0, (line, result.output)
        if args[2] == "rollback":
            assert "stable v2 -> v1" in result.stdout
    listed = runner.invoke(app, ["models", "list", "discount", "--json"])
    [model] = orjson.loads(listed.stdout)["models"]
    assert model["aliases"] == {"stable": "v1"}
    history = runner.invoke(app, ["models", "history", "discount"]).stdout
    assert "conversion fell" in history


async def test_the_python_example_follows_a_rollback(workdir: Path) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(block("python", "## From Python"), str(DOC), "exec"), namespace)
    url = f"sqlite:///{workdir}/var/registry.db"
    async with Registry(url, models_dir=workdir / "var" / "models") as registry:
        for version in ("v1", "v2"):
            await registry.register("discount", workdir / f"model-{version}.txt", who="alice")
            await registry.promote("discount", version, who="alice")
        follower = asyncio.ensure_future(namespace["follow_stable"](registry, "replica-a"))
        try:
            await served(registry, "v2")
            await registry.rollback("discount", who="bob")
            await served(registry, "v1")
        finally:
            follower.cancel()
            with pytest.raises(asyncio.CancelledError):
                await follower


async def served(registry: Registry, version: str, within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if [s.version for s in await registry.serving("discount")] == [version]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"replica-a never reported serving {version}")
