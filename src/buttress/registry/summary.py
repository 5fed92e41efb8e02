"""One JSON-ready summary of the registry, shared by ``buttress models list`` and
``GET /admin/models`` so the two never disagree."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from buttress.registry.registry import Registry


async def summarize(registry: Registry, name: str | None = None) -> dict[str, Any]:
    """Every model (or ``name`` only, which must exist): aliases, stable lineage, versions with
    checksum, size, who and when, and the replicas reporting that they serve each version."""
    names = [name] if name is not None else await registry.names()
    serving = await registry.serving(name)
    models = []
    for model in names:
        versions = await registry.versions(model)
        state = await registry.state(model)
        reports = [s for s in serving if s.name == model]
        by_version: dict[str, list[str]] = {}
        for alias, version in state.aliases.items():
            by_version.setdefault(version, []).append(alias)
        models.append({
            "name": model,
            "aliases": dict(state.aliases),
            "stable_lineage": list(state.lineage),
            "revision": state.revision,
            "versions": [{**asdict(v), "trusted_types": list(v.trusted_types),
                          "aliases": sorted(by_version.get(v.version, [])),
                          "serving": [s.replica for s in reports if s.version == v.version]}
                         for v in versions],
            "serving": [{"replica": s.replica, "version": s.version,
                         "reported_at": s.reported_at, "expires_at": s.expires_at}
                        for s in reports],
        })
    return {"registry": registry.url.redacted(), "models": models}
