"""What the registry stores: versions, alias state, audit changes, serving reports.

Plain frozen dataclasses with a JSON form, so the SQLite and Redis strategies store the same
documents and a test can compare them across backends.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import orjson

ALIASES = ("stable", "previous", "candidate")
"""The aliases a model stage may name. ``stable`` is what serves; ``previous`` is where a
rollback goes; ``candidate`` is the newest registration waiting to be promoted."""

Action = Literal["register", "promote", "rollback"]
ACTIONS: tuple[Action, ...] = ("register", "promote", "rollback")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(kind: str, value: str) -> str:
    """Names and versions become path parts and Redis key parts: letters, digits, ``._-``,
    1-64 characters, no leading dot (so never ``..``)."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"{kind} {value!r} must be 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return value


def check_alias(alias: str) -> str:
    if alias not in ALIASES:
        raise ValueError(f"alias {alias!r} must be one of {', '.join(ALIASES)}")
    return alias


@dataclass(frozen=True)
class ModelVersion:
    """One registered artifact. ``path`` is relative to the models directory
    (``<name>/<version>/model.<ext>``), so the directory can move, or become an object store."""

    name: str
    version: str
    number: int
    format: str
    sha256: str
    size: int
    path: str
    registered_by: str
    registered_at: float
    notes: str = ""
    allow_pickle: bool = False
    trusted_types: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> ModelVersion:
        data: dict[str, Any] = orjson.loads(raw)
        data["trusted_types"] = tuple(data.get("trusted_types", ()))
        return cls(**data)


@dataclass(frozen=True)
class AliasState:
    """Where a model's aliases point, and ``lineage``: the stable versions in the order they
    were promoted, so each rollback steps back exactly one. ``revision`` grows with every
    change and makes each write a compare-and-set."""

    revision: int = 0
    aliases: Mapping[str, str] = field(default_factory=dict)
    lineage: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        return orjson.dumps({"revision": self.revision, "aliases": dict(self.aliases),
                             "lineage": list(self.lineage)})

    @classmethod
    def from_json(cls, raw: bytes | str) -> AliasState:
        data = orjson.loads(raw)
        return cls(data["revision"], dict(data["aliases"]), tuple(data["lineage"]))

    def moved(self, aliases: Mapping[str, str], lineage: tuple[str, ...]) -> AliasState:
        return replace(self, revision=self.revision + 1, aliases=dict(aliases), lineage=lineage)


@dataclass(frozen=True)
class Change:
    """One audit entry: who moved which alias of which model from what to what, and why."""

    name: str
    action: Action
    alias: str | None
    from_version: str | None
    to_version: str | None
    who: str
    why: str
    at: float
    revision: int

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Change:
        return cls(**orjson.loads(raw))


@dataclass(frozen=True)
class AliasMoved:
    """What a watcher yields: ``alias`` of model ``name`` now points at ``version`` (``None``:
    the alias was cleared)."""

    name: str
    alias: str
    version: str | None
    previous_version: str | None


@dataclass(frozen=True)
class Serving:
    """A replica's heartbeat: it serves ``version`` of ``name``, believed until ``expires_at``."""

    replica: str
    name: str
    version: str
    reported_at: float
    expires_at: float

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Serving:
        return cls(**orjson.loads(raw))
