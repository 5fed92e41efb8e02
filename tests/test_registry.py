"""The registry's contract, run unchanged on SQLite and Redis: versions and their checksums,
aliases moved by promote and rollback, the audit history, serving reports, verified loads."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from buttress.registry import (
    ArtifactMissing,
    ChecksumMismatch,
    NothingToRollBack,
    Registry,
    RegistryUnavailable,
    UnknownModel,
    UnknownVersion,
    VersionExists,
)
from buttress.registry.summary import summarize
from buttress.runners import as_runner
from tests.model_files import ROWS, lightgbm_file
from tests.registry_support import BACKENDS, open_registry
from tests.support import FakeClock, free_port, matrix_url


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return matrix_url(request.param, request, tmp_path)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
async def registry(url: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Registry]:
    async def registry_time() -> float:
        return clock()

    async with open_registry(url, tmp_path, clock=clock, heartbeat_clock=registry_time) as opened:
        yield opened


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lightgbm_file(tmp_path_factory.mktemp("artifacts"))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def artifact_bytes(artifact: Path) -> bytes:
    return artifact.read_bytes()


async def with_versions(registry: Registry, artifact: Path, n: int, name: str = "discount") -> None:
    for _ in range(n):
        await registry.register(name, artifact, who="alice")


# --- versions -------------------------------------------------------------------------------


async def test_register_copies_the_artifact_and_records_its_checksum(
        registry: Registry, artifact: Path, artifact_bytes: bytes, clock: FakeClock) -> None:
    record = await registry.register("discount", artifact, who="alice", notes="first cut")
    assert (record.name, record.version, record.number, record.format) == (
        "discount", "v1", 1, "lightgbm")
    assert record.sha256 == sha256_of(artifact)
    assert record.size == len(artifact_bytes)
    assert (record.registered_by, record.registered_at, record.notes) == (
        "alice", clock.now, "first cut")
    stored = registry.artifacts.path_of(record)
    assert stored == registry.artifacts.root / "discount" / "v1" / "model.txt"
    assert sha256_of(stored) == record.sha256
    assert await registry.versions("discount") == [record]
    assert (await registry.state("discount")).aliases == {"candidate": "v1"}


async def test_versions_are_numbered_and_each_is_written_once(
        registry: Registry, artifact: Path) -> None:
    await with_versions(registry, artifact, 2)
    with pytest.raises(VersionExists):
        await registry.register("discount", artifact, who="alice", version="v2")
    named = await registry.register("discount", artifact, who="alice", version="2026-12-03")
    assert named.number == 3
    assert [v.version for v in await registry.versions("discount")] == ["v1", "v2", "2026-12-03"]
    assert await registry.names() == ["discount"]


async def test_register_without_candidate_moves_no_alias_but_is_in_the_history(
        registry: Registry, artifact: Path) -> None:
    await registry.register("discount", artifact, who="alice", candidate=False, why="backfill")
    assert (await registry.state("discount")).aliases == {}
    [change] = await registry.history("discount")
    assert (change.action, change.alias, change.to_version, change.why) == (
        "register", None, "v1", "backfill")


async def test_names_and_versions_are_checked(registry: Registry, artifact: Path) -> None:
    for bad in ("", "../etc", "a/b", "x{y}", "a:b"):
        with pytest.raises(ValueError):
            await registry.register(bad, artifact, who="alice")
    with pytest.raises(ValueError):
        await registry.register("discount", artifact, who="alice", version="../v1")


# --- aliases --------------------------------------------------------------------------------


async def test_promote_moves_stable_to_previous_and_clears_the_candidate(
        registry: Registry, artifact: Path) -> None:
    await with_versions(registry, artifact, 2)
    first = await registry.promote("discount", "v1", who="alice")
    assert first is not None
    assert (first.alias, first.from_version, first.to_version) == ("stable", None, "v1")
    assert (await registry.state("discount")).aliases == {"stable": "v1", "candidate": "v2"}
    await registry.promote("discount", "v2", who="bob")
    state = await registry.state("discount")
    assert state.aliases == {"stable": "v2", "previous": "v1"}
    assert state.lineage == ("v1", "v2")
    assert (await registry.resolve("discount")).version == "v2"
    assert (await registry.resolve("discount", "previous")).version == "v1"


async def test_rollback_steps_back_one_stable_version_each_time(
        registry: Registry, artifact: Path) -> None:
    await with_versions(registry, artifact, 3)
    for version in ("v1", "v2", "v3"):
        await registry.promote("discount", version, who="alice")
    change = await registry.rollback("discount", who="bob", why="conversion fell")
    assert (change.from_version, change.to_version) == ("v3", "v2")
    assert (await registry.state("discount")).aliases == {"stable": "v2", "previous": "v1"}
    await registry.rollback("discount", who="bob")
    assert (await registry.state("discount")).aliases == {"stable": "v1"}
    with pytest.raises(NothingToRollBack):
        await registry.rollback("discount", who="bob")
    await registry.promote("discount", "v3", who="alice")  # and forward again
    assert (await registry.state("discount")).aliases == {"stable": "v3", "previous": "v1"}


async def test_promoting_the_stable_version_again_changes_nothing(
        registry: Registry, artifact: Path) -> None:
    await with_versions(registry, artifact, 1)
    await registry.promote("discount", "v1", who="alice")
    before = await registry.history("discount")
    assert await registry.promote("discount", "v1", who="alice") is None
    assert await registry.history("discount") == before


async def test_unknown_models_and_versions_name_what_exists(
        registry: Registry, artifact: Path) -> None:
    await with_versions(registry, artifact, 2)
    with pytest.raises(UnknownModel, match="registered: discount"):
        await registry.promote("pricing", "v1", who="alice")
    with pytest.raises(UnknownVersion, match="versions: v1, v2"):
        await registry.promote("discount", "v7", who="alice")
    with pytest.raises(UnknownModel):
        await registry.rollback("pricing", who="alice")
    with pytest.raises(UnknownVersion, match="no 'stable' version yet"):
        await registry.resolve("discount", "stable")
    with pytest.raises(ValueError, match="alias"):
        await registry.resolve("discount", "production")


async def test_the_history_says_who_moved_what_when_and_why(
        registry: Registry, artifact: Path, clock: FakeClock) -> None:
    await with_versions(registry, artifact, 2)
    clock.advance(60)
    await registry.promote("discount", "v1", who="alice", why="first release")
    clock.advance(60)
    await registry.promote("discount", "v2", who="admin@10.0.0.7", why="better AUC")
    clock.advance(60)
    await registry.rollback("discount", who="bob", why="conversion fell")
    history = await registry.history("discount")
    assert [(c.action, c.alias, c.from_version, c.to_version, c.who, c.why) for c in history] == [
        ("register", "candidate", None, "v1", "alice", ""),
        ("register", "candidate", "v1", "v2", "alice", ""),
        ("promote", "stable", None, "v1", "alice", "first release"),
        ("promote", "stable", "v1", "v2", "admin@10.0.0.7", "better AUC"),
        ("rollback", "stable", "v2", "v1", "bob", "conversion fell"),
    ]
    assert [c.revision for c in history] == [1, 2, 3, 4, 5]
    assert history[-1].at == clock.now
    assert [c.action for c in await registry.history("discount", limit=2)] == [
        "promote", "rollback"]


async def test_concurrent_changes_from_two_processes_are_all_recorded(
        registry: Registry, artifact: Path, url: str, tmp_path: Path) -> None:
    """Two registries on one store (two processes, as far as the store knows) promote at
    once: every move lands in the history with its own revision, none is lost."""
    await with_versions(registry, artifact, 6)
    async with open_registry(url, tmp_path, namespace=registry.namespace) as other:
        await asyncio.gather(*(
            (registry if i % 2 else other).promote("discount", f"v{i}", who=f"op{i}")
            for i in range(1, 7)))
    state = await registry.state("discount")
    assert sorted(state.lineage) == [f"v{i}" for i in range(1, 7)]
    promotions = [c for c in await registry.history("discount") if c.action == "promote"]
    assert [c.to_version for c in promotions] == list(state.lineage)
    assert len({c.revision for c in promotions}) == 6


async def test_changes_are_reported_to_the_metric_hook(url: str, tmp_path: Path,
                                                        artifact: Path) -> None:
    seen: list[tuple[str, str]] = []
    async with open_registry(url, tmp_path, on_change=lambda *c: seen.append(c)) as registry:
        await with_versions(registry, artifact, 2)
        await registry.promote("discount", "v1", who="alice")
        await registry.promote("discount", "v1", who="alice")  # no change, not counted
        await registry.promote("discount", "v2", who="alice")
        await registry.rollback("discount", who="alice")
    assert seen == [("discount", "register")] * 2 + [("discount", "promote")] * 2 + [
        ("discount", "rollback")]


# --- serving reports ------------------------------------------------------------------------


async def test_serving_reports_expire_after_their_ttl(
        registry: Registry, artifact: Path, clock: FakeClock) -> None:
    await with_versions(registry, artifact, 2)
    await registry.report_serving("replica-a", "discount", "v1", ttl=10)
    await registry.report_serving("replica-b", "discount", "v2", ttl=30)
    await registry.report_serving("replica-a", "pricing", "v9", ttl=30)
    assert [(s.replica, s.version) for s in await registry.serving("discount")] == [
        ("replica-a", "v1"), ("replica-b", "v2")]
    clock.advance(15)
    assert [(s.replica, s.version) for s in await registry.serving("discount")] == [
        ("replica-b", "v2")]
    await registry.report_serving("replica-a", "discount", "v2", ttl=10)  # a newer heartbeat
    summary = await summarize(registry, "discount")
    [model] = summary["models"]
    assert [v["serving"] for v in model["versions"]] == [[], ["replica-a", "replica-b"]]
    assert len(await registry.serving()) == 3


async def test_the_summary_lists_versions_with_their_aliases(
        registry: Registry, artifact: Path) -> None:
    await with_versions(registry, artifact, 2)
    await registry.promote("discount", "v1", who="alice")
    summary = await summarize(registry)
    [model] = summary["models"]
    assert model["aliases"] == {"stable": "v1", "candidate": "v2"}
    assert [(v["version"], v["aliases"]) for v in model["versions"]] == [
        ("v1", ["stable"]), ("v2", ["candidate"])]
    assert model["versions"][0]["sha256"] == sha256_of(artifact)
    with pytest.raises(UnknownModel):
        await summarize(registry, "pricing")


# --- loading --------------------------------------------------------------------------------


async def test_load_gives_the_verified_model_an_alias_points_at(
        registry: Registry, artifact: Path) -> None:
    await with_versions(registry, artifact, 2)
    await registry.promote("discount", "v2", who="alice")
    loaded = await registry.load("discount")
    assert (loaded.name, loaded.version, loaded.alias) == ("discount", "v2", "stable")
    runner = as_runner(loaded.model)
    try:
        predictions = await runner.run(ROWS)
    finally:
        runner.close()
    assert np.asarray(predictions).shape == (len(ROWS),)
    pinned = await registry.load("discount", version="v1")
    assert (pinned.version, pinned.alias) == ("v1", None)


async def test_a_changed_artifact_is_refused_counted_and_logged(
        url: str, tmp_path: Path, artifact: Path, caplog: pytest.LogCaptureFixture) -> None:
    refused: list[tuple[str, str]] = []
    async with open_registry(url, tmp_path,
                             on_refused=lambda *r: refused.append(r)) as registry:
        record = await registry.register("discount", artifact, who="alice")
        await registry.promote("discount", "v1", who="alice")
        stored = registry.artifacts.path_of(record)
        stored.write_bytes(stored.read_bytes().replace(b"tree", b"TREE", 1))
        with caplog.at_level(logging.ERROR, logger="buttress.registry"), \
                pytest.raises(ChecksumMismatch, match="refusing to load"):
            await registry.load("discount")
        stored.unlink()
        with pytest.raises(ArtifactMissing, match="missing"):
            await registry.load("discount")
    assert refused == [("discount", "checksum"), ("discount", "missing")]
    assert "refused to load discount v1 (checksum)" in caplog.text


async def test_an_unreachable_registry_raises_registry_unavailable(
        tmp_path: Path, artifact: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    async with Registry(f"sqlite:///{tmp_path}/a-file/registry.db",
                        models_dir=tmp_path / "models") as registry:
        with pytest.raises(RegistryUnavailable, match="registry sqlite"):
            await registry.names()
    async with Registry(f"redis://127.0.0.1:{free_port()}/0",
                        models_dir=tmp_path / "models") as registry:
        with pytest.raises(RegistryUnavailable, match="registry redis"):
            await registry.register("discount", artifact, who="alice")
        assert not (tmp_path / "models" / "discount" / "v1").exists()
