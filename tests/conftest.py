from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import MACHINE_REDIS_URL, PrivateRedis, machine_redis_available


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
