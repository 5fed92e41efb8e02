"""Watchers: every process serving a model learns of an alias move made anywhere else —
pushed by Redis pub/sub, healed by a periodic re-check when a message was missed, polled on
SQLite within a second."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from buttress.registry import AliasMoved, Registry, RegistryWatcher
from tests.model_files import lightgbm_file
from tests.registry_support import BACKENDS, open_registry
from tests.support import PrivateRedis, matrix_url

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return matrix_url(request.param, request, tmp_path)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lightgbm_file(tmp_path_factory.mktemp("artifacts"))


async def next_move(watcher: RegistryWatcher, within: float) -> AliasMoved:
    return await asyncio.wait_for(anext(watcher), within)


async def prepared(registry: Registry, artifact: Path) -> None:
    """``discount`` with v1 then v2 promoted: stable v2, previous v1."""
    for _ in range(2):
        await registry.register("discount", artifact, who="alice", candidate=False)
    await registry.promote("discount", "v1", who="alice")
    await registry.promote("discount", "v2", who="alice")


async def test_a_watcher_starts_from_the_current_pointers_and_sees_later_moves(
        url: str, tmp_path: Path, artifact: Path) -> None:
    async with open_registry(url, tmp_path) as registry, \
            open_registry(url, tmp_path, namespace=registry.namespace) as elsewhere:
        await prepared(registry, artifact)
        async with registry.watch(["discount"], interval=0.1) as watcher:
            assert watcher.pointers == {("discount", "stable"): "v2",
                                        ("discount", "previous"): "v1"}
            await elsewhere.rollback("discount", who="bob")
            moved = await next_move(watcher, within=2.0)
            assert moved == AliasMoved("discount", "stable", "v1", "v2")
            moved = await next_move(watcher, within=2.0)  # previous was cleared
            assert moved == AliasMoved("discount", "previous", None, "v1")
            assert await watcher.check() == []  # nothing since


@pytest.mark.redis
async def test_two_watchers_on_one_redis_both_see_a_rollback_issued_elsewhere(
        machine_redis_url: str, tmp_path: Path, artifact: Path) -> None:
    """A re-check period of a minute: only the publish can deliver within a second."""
    async with open_registry(machine_redis_url, tmp_path) as operator:
        await prepared(operator, artifact)
        async with open_registry(machine_redis_url, tmp_path,
                                 namespace=operator.namespace) as replica_a, \
                open_registry(machine_redis_url, tmp_path,
                              namespace=operator.namespace) as replica_b, \
                replica_a.watch(interval=60) as watch_a, \
                replica_b.watch(interval=60) as watch_b:
            await asyncio.sleep(0.1)  # both subscribed (the first wait subscribes)
            first_a = asyncio.ensure_future(next_move(watch_a, within=1.0))
            first_b = asyncio.ensure_future(next_move(watch_b, within=1.0))
            await asyncio.sleep(0.1)
            await operator.rollback("discount", who="bob", why="conversion fell")
            expected = AliasMoved("discount", "stable", "v1", "v2")
            assert await first_a == expected
            assert await first_b == expected


@pytest.mark.redis
async def test_a_watcher_that_missed_the_publish_heals_within_its_recheck_period(
        machine_redis_url: str, tmp_path: Path, artifact: Path) -> None:
    async with open_registry(machine_redis_url, tmp_path) as operator, \
            open_registry(machine_redis_url, tmp_path, namespace=operator.namespace) as replica:
        await prepared(operator, artifact)
        operator.backend.channel = "buttress:{nobody}:listens"  # type: ignore[attr-defined]
        async with replica.watch(interval=0.5) as watcher:
            waiting = asyncio.ensure_future(next_move(watcher, within=2.0))
            await asyncio.sleep(0.05)
            started = time.monotonic()
            await operator.rollback("discount", who="bob")
            moved = await waiting
            assert (moved.alias, moved.version) == ("stable", "v1")
            assert time.monotonic() - started < 0.5 + 0.3


@pytest.mark.slow
@pytest.mark.redis
async def test_a_watcher_cut_off_from_redis_resubscribes_and_catches_up(
        private_redis: PrivateRedis, tmp_path: Path, artifact: Path) -> None:
    async with open_registry(private_redis.url, tmp_path) as operator, \
            open_registry(private_redis.url, tmp_path, namespace=operator.namespace) as replica:
        await prepared(operator, artifact)
        async with replica.watch(interval=0.3) as watcher:
            waiting = asyncio.ensure_future(next_move(watcher, within=3.0))
            await asyncio.sleep(0.1)
            admin = Redis.from_url(private_redis.url)
            try:
                assert await admin.client_kill_filter(_type="pubsub") == 1
                await operator.rollback("discount", who="bob")  # published to nobody
            finally:
                await admin.aclose()
            moved = await waiting
            assert (moved.alias, moved.version) == ("stable", "v1")
            assert (await next_move(watcher, within=1.0)).alias == "previous"
            # subscribed again: with the re-check a minute away, only a publish is this fast
            watcher.interval = 60
            following = asyncio.ensure_future(next_move(watcher, within=2.0))
            await asyncio.sleep(0.5)
            await operator.promote("discount", "v2", who="bob")
            moved = await following
            assert (moved.alias, moved.version) == ("stable", "v2")


@pytest.mark.slow
async def test_a_sqlite_watcher_sees_a_change_from_another_process_within_a_second(
        tmp_path: Path, artifact: Path) -> None:
    url = f"sqlite:///{tmp_path}/registry.db"
    async with open_registry(url, tmp_path) as registry:
        await prepared(registry, artifact)
        async with registry.watch(["discount"]) as watcher:  # the default poll period
            waiting = asyncio.ensure_future(next_move(watcher, within=15.0))
            script = (
                "import asyncio, time\n"
                "from buttress.registry import Registry\n"
                "async def main():\n"
                f"    async with Registry({url!r}, models_dir={str(tmp_path)!r}) as r:\n"
                "        await r.rollback('discount', who='other-process')\n"
                "        print(time.time(), flush=True)\n"
                "asyncio.run(main())\n")
            other = await asyncio.create_subprocess_exec(
                sys.executable, "-c", script, stdout=subprocess.PIPE)
            out, _ = await other.communicate()
            assert other.returncode == 0
            moved = await waiting
            noticed = time.time()
            assert (moved.alias, moved.version) == ("stable", "v1")
            assert noticed - float(out) < 1.0


@pytest.mark.slow
@pytest.mark.redis
async def test_a_watcher_outlives_a_frozen_redis(
        private_redis: PrivateRedis, tmp_path: Path, artifact: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Redis stops answering (SIGSTOP): the watcher logs, keeps trying, and once Redis is
    back it reports the next move as if nothing happened."""
    url = private_redis.url + "?timeout=100ms"
    async with open_registry(url, tmp_path) as operator, \
            open_registry(url, tmp_path, namespace=operator.namespace) as replica:
        await prepared(operator, artifact)
        async with replica.watch(interval=0.2) as watcher:
            waiting = asyncio.ensure_future(next_move(watcher, within=10.0))
            assert private_redis.process is not None
            private_redis.process.send_signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(1.0)
            finally:
                private_redis.process.send_signal(signal.SIGCONT)
            assert not waiting.done()
            await operator.rollback("discount", who="bob")
            moved = await waiting
            assert (moved.alias, moved.version) == ("stable", "v1")
    assert "registry watcher" in caplog.text  # it said why it was not answering


def set_change_mark(path: Path, value: int) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("UPDATE registry_meta SET value = ? WHERE key = 'changes'", (value,))


async def test_a_watcher_resyncs_even_when_the_change_mark_misleads_it(
        tmp_path: Path, artifact: Path) -> None:
    """The change mark restarted (a Redis without persistence does that) and reached the
    count the watcher last saw: the periodic full re-read still finds the move."""
    url = f"sqlite:///{tmp_path}/registry.db"
    async with open_registry(url, tmp_path) as registry:
        await prepared(registry, artifact)
        mark = await registry.backend.change_mark()
        async with registry.watch(interval=0.05, resync_every=0.5) as watcher:
            set_change_mark(tmp_path / "registry.db", mark - 1)
            await registry.rollback("discount", who="bob")  # the mark is back at `mark`
            assert await watcher.check() == []  # fooled by the mark...
            moved = await next_move(watcher, within=2.0)  # ...but not for long
            assert (moved.alias, moved.version) == ("stable", "v1")
