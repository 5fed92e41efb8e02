"""The registry's backend matrix, shared by its contract and watcher tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from buttress.registry import Registry
from tests.support import (
    MACHINE_REDIS_URL,
    SENTINEL_URL_TEMPLATE,
    delete_namespaces,
    unique_prefix,
)

BACKENDS = [
    pytest.param("sqlite:///{tmp_path}/registry.db", id="sqlite"),
    pytest.param(MACHINE_REDIS_URL, id="redis", marks=pytest.mark.redis),
    pytest.param(SENTINEL_URL_TEMPLATE, id="sentinel", marks=[pytest.mark.redis, pytest.mark.slow]),
]



@contextlib.asynccontextmanager
async def open_registry(url: str, tmp_path: Path, **options: Any) -> AsyncIterator[Registry]:
    """A registry in a namespace of its own; on Redis its keys are deleted afterwards. Given
    a ``namespace``, it is a second view of a registry another test opened, and cleans up
    nothing."""
    owner = "namespace" not in options
    options.setdefault("namespace", unique_prefix("registry"))
    registry = Registry(url, models_dir=tmp_path / "models", **options)
    try:
        yield registry
    finally:
        await registry.aclose()
        if owner and registry.url.is_redis:
            await delete_namespaces(url, [registry.namespace])
