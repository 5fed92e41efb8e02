"""Tables for ``buttress models list``, drawn from :func:`buttress.registry.summary.summarize`."""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table


def when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    scaled = size / 1024
    for unit in ("KiB", "MiB"):
        if scaled < 1024:
            return f"{scaled:.1f} {unit}"
        scaled /= 1024
    return f"{scaled:.1f} GiB"


def models_table(payload: dict[str, Any]) -> Table:
    table = Table("model", "stable", "previous", "candidate", "versions",
                  "serving (replica=version)", title=f"registry {payload['registry']}")
    for model in payload["models"]:
        aliases = model["aliases"]
        table.add_row(model["name"], aliases.get("stable", "-"), aliases.get("previous", "-"),
                      aliases.get("candidate", "-"), str(len(model["versions"])),
                      ", ".join(f"{s['replica']}={s['version']}" for s in model["serving"]))
    return table


def versions_table(payload: dict[str, Any]) -> Table:
    [model] = payload["models"]
    table = Table("version", "aliases", "format", "sha256", "size", "registered by",
                  "registered (UTC)", "serving", "notes", title=f"model {model['name']}")
    for version in model["versions"]:
        table.add_row(version["version"], ", ".join(version["aliases"]), version["format"],
                      version["sha256"][:12], _size(version["size"]), version["registered_by"],
                      when(version["registered_at"]), ", ".join(version["serving"]),
                      version["notes"])
    return table
