"""Every test under ``tests/reliability/`` carries the ``reliability`` marker, so a quick local
run skips them with ``-m "not slow and not reliability"``; CI runs them all. The fault tests
share one pair of replicas (``replicas``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.replicas import Replicas, persistent_redis

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="package")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Two replicas of the fault service on one private, persistent Redis, started once for
    every fault test (each test leaves them healthy for the next), stopped with the last
    test of this folder."""
    workdir = tmp_path_factory.mktemp("faults")
    redis = persistent_redis(workdir / "redis")
    redis.start()
    running = Replicas(workdir, redis, redis.url)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        redis.stop()
