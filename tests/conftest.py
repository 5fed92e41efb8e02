from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import (
    MACHINE_REDIS_URL,
    PrivateRedis,
    ServiceBackend,
    delete_namespaces,
    machine_redis_available,
)

SERVICE_BACKENDS = [
    pytest.param("memory://", id="memory"),
    pytest.param(MACHINE_REDIS_URL, id="redis", marks=pytest.mark.redis),
]


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server this test owns: it may stop and restart it at will."""
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def machine_redis_url() -> str:
    """The machine's Redis (127.0.0.1:6379). Tests must use their own key prefix on it."""
    if not machine_redis_available():
        pytest.fail("Redis is not running on 127.0.0.1:6379 (.ci/run starts it)")
    return MACHINE_REDIS_URL


@pytest.fixture(params=SERVICE_BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ServiceBackend]:
    """Each service-level test once on memory:// and once on the machine's Redis; the Redis
    keys of the services it named are deleted afterwards (and nothing else)."""
    url: str = request.param
    if url.startswith("redis"):
        request.getfixturevalue("machine_redis_url")
    chosen = ServiceBackend(url, tmp_path)
    yield chosen
    if chosen.is_redis:
        await delete_namespaces(url, chosen.names)
