"""``memory://`` features: a dict per entity, owned by one store (tests, demos, one process)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from buttress.features.table import FeatureTable, Value

_EMPTY: dict[str, Value] = {}  # an unknown id's row; never changed (the store copies rows)
_EMPTY_TABLE: dict[str, dict[str, Value]] = {}


class MemoryFeatures:
    def __init__(self) -> None:
        self._rows: dict[str, dict[str, dict[str, Value]]] = {}

    async def fetch(self, table: FeatureTable, ids: Sequence[str]) -> list[dict[str, Value]]:
        return self.fetch_now(table, ids)

    def fetch_now(self, table: FeatureTable, ids: Sequence[str]) -> list[dict[str, Value]]:
        """``fetch`` without the coroutine: the store calls this when the backend has it."""
        rows = self._rows.get(table.entity, _EMPTY_TABLE)
        # Only declared features are ever written (the store coerces them), and the store
        # copies what it reads, so the stored dicts can be handed out as they are.
        return [rows.get(key, _EMPTY) for key in ids]

    async def write(
        self, table: FeatureTable, rows: Sequence[tuple[str, Mapping[str, Value]]]
    ) -> None:
        stored = self._rows.setdefault(table.entity, {})
        for key, features in rows:
            stored.setdefault(key, {}).update(features)
