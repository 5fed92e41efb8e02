"""Two ``buttress serve`` replicas sharing one Redis registry follow the alias: a rollback
issued with the CLI reaches both through pub/sub, and a move whose publish nobody heard
reaches both within the watcher's re-check period."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from buttress.registry import Registry
from tests.servers import REPO, RunningServer, clean_environment, cli_command, running_server
from tests.services.registry_model import linear_file
from tests.support import PrivateRedis

pytestmark = [pytest.mark.slow, pytest.mark.redis,
              pytest.mark.filterwarnings("ignore::ResourceWarning")]

TARGET = f"{REPO / 'tests/services/registry_model.py'}:svc"
RECHECK = 5.0  # the Redis watcher's re-check period (registry/watch.py)


def served_version(server: RunningServer) -> str:
    response = httpx.post(f"{server.base_url}/predict", json={"x": [0.1, 0.2, 0.3]},
                          timeout=5)
    assert response.status_code == 200
    return response.headers["x-model-version"]


def wait_all_serve(servers: list[RunningServer], version: str, within: float) -> float:
    """Seconds until every server answers with ``version``."""
    started = time.monotonic()
    pending = list(servers)
    while pending:
        pending = [s for s in pending if served_version(s) != version]
        assert time.monotonic() - started < within, f"{len(pending)} replica(s) not on {version}"
        time.sleep(0.05)
    return time.monotonic() - started


def models_cli(workdir: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(cli_command("models", *args), cwd=workdir, capture_output=True,
                          env=clean_environment(workdir, env), text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_two_replicas_follow_a_rollback_and_heal_a_missed_publish(
        private_redis: PrivateRedis, tmp_path: Path) -> None:
    env = {"BUTTRESS_REGISTRY_URL": private_redis.url,
           "BUTTRESS_MODELS_DIR": str(tmp_path / "models")}
    models_cli(tmp_path, env, "register", "scorer", str(linear_file(tmp_path, 1.0)))
    models_cli(tmp_path, env, "promote", "scorer", "v1")
    models_cli(tmp_path, env, "register", "scorer", str(linear_file(tmp_path, 2.0)))
    models_cli(tmp_path, env, "promote", "scorer", "v2")
    with running_server(TARGET, tmp_path / "a", env=env) as a, \
            running_server(TARGET, tmp_path / "b", env=env) as b:
        assert served_version(a) == served_version(b) == "v2"

        models_cli(tmp_path, env, "rollback", "scorer", "--reason", "conversion fell")
        # published: well within the re-check period
        assert wait_all_serve([a, b], "v1", within=RECHECK - 1) < RECHECK - 1

        async with Registry(private_redis.url, models_dir=tmp_path / "models") as quiet:
            quiet.backend.channel = "buttress:{nobody}:listens"  # type: ignore[attr-defined]
            await quiet.promote("scorer", "v2", who="test", why="nobody hears this")
        wait_all_serve([a, b], "v2", within=RECHECK + 3)

        async with Registry(private_redis.url, models_dir=tmp_path / "models") as registry:
            reports = {r.replica: r.version for r in await registry.serving("scorer")}
        assert sorted(reports.values()) == ["v2", "v2"]
