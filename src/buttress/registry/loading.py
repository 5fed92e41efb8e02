"""From a version record to a model object: verify the bytes, then build with a safe loader.

A refusal (wrong checksum, missing file, pickle not allowed, untrusted skops types) is logged,
counted through ``on_refused(name, reason)`` and raised; nothing half-loaded is returned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from buttress.registry.artifacts import ArtifactStore
from buttress.registry.errors import ArtifactRefused
from buttress.registry.formats import load_artifact
from buttress.registry.records import ModelVersion

log = logging.getLogger("buttress.registry")

RefusalHook = Callable[[str, str], None]


@dataclass(frozen=True)
class LoadedModel:
    """A verified, loaded model, ready for :func:`buttress.runners.as_runner`."""

    name: str
    version: str
    alias: str | None
    record: ModelVersion
    model: Any


async def load_verified(artifacts: ArtifactStore, record: ModelVersion, alias: str | None, *,
                        allow_pickle: bool, trusted_types: Iterable[str],
                        on_refused: RefusalHook | None) -> LoadedModel:
    """Off the event loop: hashing and parsing a model take milliseconds to seconds."""
    trusted = tuple(trusted_types)

    def verify_and_build() -> Any:
        data = artifacts.read_verified(record)
        return load_artifact(record, data, allow_pickle=allow_pickle, trusted_types=trusted)

    try:
        model = await asyncio.to_thread(verify_and_build)
    except ArtifactRefused as refused:
        log.error("registry: refused to load %s %s (%s): %s", record.name, record.version,
                  refused.reason, refused)
        if on_refused is not None:
            on_refused(record.name, refused.reason)
        raise
    return LoadedModel(record.name, record.version, alias, record, model)
