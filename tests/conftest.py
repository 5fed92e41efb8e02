from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import (
    MACHINE_REDIS_URL,
    SENTINEL_URL_TEMPLATE,
    PrivateRedis,
    PrivateSentinel,
    ServiceBackend,
    delete_namespaces,
    machine_redis_available,
    matrix_url,
)

SERVICE_BACKENDS = [
    pytest.param("memory://", id="memory"),
    pytest.param(MACHINE_REDIS_URL, id="redis", marks=pytest.mark.redis),
    pytest.param(SENTINEL_URL_TEMPLATE, id="sentinel", marks=[pytest.mark.redis, pytest.mark.slow]),
]


@pytest.fixture(scope="session")
def sentinel_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateSentinel]:
    """A private primary and a sentinel watching it, shared by the session's sentinel entries
    of the backend matrices (each test keeps to its own key prefix, as on the machine Redis)."""
    sentinel = PrivateSentinel(tmp_path_factory.mktemp("sentinel"))
    sentinel.start()
    try:
        yield sentinel
    finally:
        sentinel.stop()


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
    url = matrix_url(request.param, request)
    chosen = ServiceBackend(url, tmp_path)
    yield chosen
    if chosen.is_redis:
        await delete_namespaces(url, chosen.names)
