"""Load features from a CSV or Parquet file into a store: idempotent, and every row accounted for.

Rules (summed up by ``buttress features load --help``):

- The file has a header; one column holds the entity id (``id`` unless told otherwise), the
  others are declared features. A column that is not a declared feature is an error and
  nothing is loaded, since it is most often a typo that would silently lose a feature; pass
  ``ignore_unknown_columns=True`` to skip such columns (the report lists them).
- Rows are upserted: loading the same file twice leaves the same state; a feature a row does
  not give (an empty cell, a null, a column the file lacks) keeps its stored value. When an id
  appears twice, the later row wins.
- A row is rejected, with its line number and the reason, when its id is empty, when a value
  does not convert to the type of the feature's declared default, when it has the wrong number
  of fields, or when it gives no feature at all. Rejected rows are never written; the others are.
- Rows are written in chunks as they are read, so a store failure midway leaves the earlier
  chunks written and raises :class:`FeatureStoreUnavailable`; loading again is safe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from buttress.backends import Connections, parse_backend_url
from buttress.features._readers import Cells, LoadError, open_source
from buttress.features.store import DEFAULT_NAMESPACE, FeatureStore
from buttress.features.table import FeatureTable, Value

__all__ = ["LoadError", "LoadReport", "RejectedRow", "load_file", "load_into"]

Progress = Callable[[int, int | None], None]
"""``progress(rows_read, total_rows_or_None)``, called after each chunk and at the end."""


@dataclass(frozen=True)
class RejectedRow:
    line: int
    """CSV: the line the row starts on (the header is line 1). Parquet: the 1-based row."""
    id: str | None
    reason: str


@dataclass(frozen=True)
class LoadReport:
    path: str
    entity: str
    loaded: int
    """Rows written (an id given twice counts twice)."""
    rejected: tuple[RejectedRow, ...]
    ignored_columns: tuple[str, ...] = ()

    def summary(self) -> str:
        rows = "row" if self.loaded == 1 else "rows"
        text = f"{self.path}: {self.loaded} {rows} loaded, {len(self.rejected)} rejected"
        if self.ignored_columns:
            text += f", ignored columns: {', '.join(self.ignored_columns)}"
        return text


async def load_file(
    url: str,
    table: FeatureTable,
    path: str | Path,
    *,
    id_column: str = "id",
    namespace: str = DEFAULT_NAMESPACE,
    ignore_unknown_columns: bool = False,
    progress: Progress | None = None,
) -> LoadReport:
    """Open the store at ``url``, load ``path`` into ``table``'s entity, close the store."""
    if parse_backend_url(url).is_memory:
        raise ValueError(
            "memory:// features live inside one process; load into the service's own store "
            "with load_into(store, ...) instead"
        )
    connections = Connections()
    store = FeatureStore(url, [table], namespace=namespace)
    try:
        await store.open(connections)
        return await load_into(
            store,
            table.entity,
            path,
            id_column=id_column,
            ignore_unknown_columns=ignore_unknown_columns,
            progress=progress,
        )
    finally:
        await store.aclose()
        await connections.aclose()


async def load_into(
    store: FeatureStore,
    entity: str,
    path: str | Path,
    *,
    id_column: str = "id",
    ignore_unknown_columns: bool = False,
    progress: Progress | None = None,
    chunk_size: int = 1000,
) -> LoadReport:
    """Load ``path`` into an open ``store`` (file reads block: call it off the request path)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    table = store.table(entity)
    path = Path(path)
    loaded = 0
    read = 0
    rejected: list[RejectedRow] = []
    with open_source(path, chunk_size) as source:
        id_index, features, ignored = _plan(path, table, source.columns, id_column)
        if ignored and not ignore_unknown_columns:
            raise LoadError(
                f"{path}: columns {', '.join(ignored)} are not declared features of "
                f"{entity!r} (declared: {', '.join(table.names)}); nothing was loaded. "
                "Ignore them with ignore_unknown_columns=True (--ignore-unknown-columns)."
            )
        chunk: list[tuple[str, Mapping[str, Value]]] = []
        for line, cells in source.records:
            read += 1
            row = _row(table, id_index, features, cells)
            if isinstance(row, RejectedRow):
                rejected.append(RejectedRow(line, row.id, row.reason))
            else:
                chunk.append(row)
            if len(chunk) >= chunk_size:
                await store.backend.write(table, chunk)
                loaded += len(chunk)
                chunk = []
                if progress is not None:
                    progress(read, source.total)
        if chunk:
            await store.backend.write(table, chunk)
            loaded += len(chunk)
    if progress is not None:
        progress(read, read)
    return LoadReport(str(path), entity, loaded, tuple(rejected), tuple(ignored))


def _plan(
    path: Path, table: FeatureTable, columns: tuple[str, ...], id_column: str
) -> tuple[int, tuple[tuple[int, str], ...], tuple[str, ...]]:
    """Where the id is, which (index, feature) columns to read, which columns to ignore."""
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise LoadError(f"{path}: the header repeats {', '.join(duplicated)}")
    if id_column not in columns:
        raise LoadError(
            f"{path}: no id column {id_column!r} in the header ({', '.join(columns)}); "
            "name it with id_column= (--id-column)"
        )
    features = tuple((i, c) for i, c in enumerate(columns) if c in table.defaults)
    ignored = tuple(c for c in columns if c != id_column and c not in table.defaults)
    return columns.index(id_column), features, ignored


def _row(
    table: FeatureTable, id_index: int, features: tuple[tuple[int, str], ...], cells: Cells | str
) -> tuple[str, dict[str, Value]] | RejectedRow:
    """The row's id and converted features, or why it is rejected (line filled in later)."""
    if isinstance(cells, str):
        return RejectedRow(0, None, cells)
    raw_id = cells[id_index]
    entity_id = _id(raw_id)
    if entity_id is None:
        if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
            return RejectedRow(0, None, "missing id")
        return RejectedRow(0, None, f"id {raw_id!r} is not a string or an integer")
    values: dict[str, Value] = {}
    problems: list[str] = []
    for index, name in features:
        cell = cells[index]
        if cell is None or cell == "":
            continue
        try:
            values[name] = table.coerce(name, cell)
        except ValueError as error:
            problems.append(f"{name}: {error} (declared {table.kind(name).__name__})")
    if problems:
        return RejectedRow(0, entity_id, "; ".join(problems))
    if not values:
        return RejectedRow(0, entity_id, "no feature values (every feature cell is empty)")
    return entity_id, values


def _id(cell: object) -> str | None:
    if isinstance(cell, str):
        return cell.strip() or None
    if isinstance(cell, bool) or cell is None:
        return None
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    if isinstance(cell, int):
        return str(cell)
    return None
