"""Rows out of CSV (stdlib ``csv``) and Parquet (``pyarrow``, imported only when needed).

Both readers hand the loader the same thing: the header, an estimate of the row count for
progress, and ``(line, cells)`` pairs, or ``(line, reason)`` for a row that cannot even be
split into cells. For CSV ``line`` is the line the record starts on (the header is line 1);
Parquet has no lines, so ``line`` is the 1-based row number.
"""

from __future__ import annotations

import csv
import importlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class LoadError(Exception):
    """The file cannot be loaded at all (unreadable, bad header, unknown columns...)."""


Cells = Sequence[object]


@dataclass(frozen=True)
class Source:
    columns: tuple[str, ...]
    total: int | None
    records: Iterator[tuple[int, Cells | str]]


@contextmanager
def open_source(path: Path, batch_size: int) -> Iterator[Source]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with _csv(path) as source:
            yield source
    elif suffix in (".parquet", ".pq"):
        yield _parquet(path, batch_size)
    else:
        raise LoadError(f"{path}: unsupported file type {suffix!r} (use .csv or .parquet)")


@contextmanager
def _csv(path: Path) -> Iterator[Source]:
    total = _count_lines(path) - 1
    try:
        # utf-8-sig: spreadsheets often start a CSV with a byte-order mark.
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as error:
        raise LoadError(f"{path}: {error.strerror or error}") from error
    with handle:
        reader = csv.reader(handle)
        try:
            header = tuple(cell.strip() for cell in next(reader))
        except StopIteration:
            raise LoadError(f"{path}: the file is empty (expected a header line)") from None
        except (csv.Error, UnicodeDecodeError) as error:
            raise LoadError(f"{path}:1: {error}") from error

        def records() -> Iterator[tuple[int, Cells | str]]:
            line = reader.line_num + 1
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except (csv.Error, UnicodeDecodeError) as error:
                    raise LoadError(f"{path}:{line}: {error}") from error
                if row:  # a blank line holds no row
                    if len(row) == len(header):
                        yield line, row
                    else:
                        yield line, f"has {len(row)} fields, the header has {len(header)}"
                line = reader.line_num + 1

        yield Source(columns=header, total=max(total, 0), records=records())


def _count_lines(path: Path) -> int:
    """Newlines in the file: a cheap row estimate (quoted multi-line cells make it high)."""
    try:
        with path.open("rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except OSError as error:
        raise LoadError(f"{path}: {error.strerror or error}") from error


def _parquet(path: Path, batch_size: int) -> Source:
    try:
        parquet: Any = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise LoadError(
            f"{path}: reading Parquet needs pyarrow, which is not installed: pip install pyarrow"
        ) from None
    try:
        file = parquet.ParquetFile(path)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise LoadError(f"{path}: {error}") from error
    columns = tuple(str(name) for name in file.schema_arrow.names)

    def records() -> Iterator[tuple[int, Cells | str]]:
        number = 0
        for batch in file.iter_batches(batch_size=batch_size):
            data = batch.to_pydict()
            for values in zip(*(data[name] for name in columns), strict=True):
                number += 1
                yield number, values

    return Source(columns=columns, total=int(file.metadata.num_rows), records=records())
