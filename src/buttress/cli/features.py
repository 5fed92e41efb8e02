"""``buttress features ...``: load feature files into a store from the command line.

The features of an entity are declared either by pointing at a :class:`FeatureTable` in the
service's code (``--table path/to/service.py:user_features``) or inline with one
``--default NAME=VALUE`` per feature, where the value's spelling sets the type (``0`` int,
``0.0`` float, anything else a string). Exit status: 0 all rows loaded, 1 some rows rejected
(the others were loaded), 2 nothing loaded (bad file, bad options, store unavailable).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from buttress.cli.targets import TargetError, load_object
from buttress.features.loader import LoadError, LoadReport, load_file
from buttress.features.store import DEFAULT_NAMESPACE, FeatureStoreUnavailable
from buttress.features.table import FeatureTable, Value

app = typer.Typer(help="Feature store: load features from CSV or Parquet files.")

SHOWN_REJECTIONS = 50


@app.callback()
def features() -> None:
    """Feature store commands."""


@app.command("load")
def load(
    url: Annotated[
        str, typer.Argument(help="Store URL: sqlite:///features.db, redis://host:6379/0")
    ],
    file: Annotated[Path, typer.Argument(help="A .csv (with a header) or .parquet file")],
    entity: Annotated[str | None, typer.Option(help="The entity, e.g. user")] = None,
    table: Annotated[
        str | None, typer.Option(help="A FeatureTable in code: path/to/file.py:name or module:name")
    ] = None,
    default: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME=VALUE", help="Declare a feature inline (repeatable)"),
    ] = None,
    id_column: Annotated[str, typer.Option(help="The column holding the entity id")] = "id",
    namespace: Annotated[str, typer.Option(help="The service's feature namespace")] = (
        DEFAULT_NAMESPACE
    ),
    ignore_unknown_columns: Annotated[
        bool,
        typer.Option("--ignore-unknown-columns", help="Skip columns that are not features"),
    ] = False,
) -> None:
    """Upsert features from FILE into the store at URL (loading twice is harmless).

    Declare the features with --table or with one --default per feature.

    A column that is not a declared feature stops the load (--ignore-unknown-columns).

    An empty cell keeps the stored value (or the default).

    Rows with no id or a value of the wrong type are rejected and listed by line.

    Exit status: 0 all loaded, 1 some rows rejected, 2 nothing loaded.
    """
    console = Console()
    try:
        declared = _declared_table(entity, table, default or [])
    except (ValueError, TypeError, LookupError, ImportError, OSError) as error:
        raise typer.BadParameter(str(error)) from error
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(f"loading {declared.entity}", total=None)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        try:
            report = asyncio.run(
                load_file(
                    url,
                    declared,
                    file,
                    id_column=id_column,
                    namespace=namespace,
                    ignore_unknown_columns=ignore_unknown_columns,
                    progress=progress,
                )
            )
        except (LoadError, FeatureStoreUnavailable, ValueError) as error:
            console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(2) from error
    _print_report(console, report)
    if report.rejected:
        raise typer.Exit(1)


def _print_report(console: Console, report: LoadReport) -> None:
    console.print(report.summary(), soft_wrap=True, highlight=False)
    if not report.rejected:
        return
    rejected = Table("line", "id", "reason", title="rejected rows")
    for row in report.rejected[:SHOWN_REJECTIONS]:
        rejected.add_row(str(row.line), row.id or "", row.reason)
    console.print(rejected)
    hidden = len(report.rejected) - SHOWN_REJECTIONS
    if hidden > 0:
        console.print(f"... and {hidden} more rejected rows")


def _declared_table(entity: str | None, target: str | None, defaults: list[str]) -> FeatureTable:
    if target and defaults:
        raise ValueError("declare the features with --table or with --default, not both")
    if target:
        return _pick(_resolve(target), entity, target)
    if not defaults:
        raise ValueError("declare the features: --table file.py:name, or --default NAME=VALUE")
    if entity is None:
        raise ValueError("--entity is required with --default")
    return FeatureTable(entity=entity, defaults=dict(map(_default, defaults)))


def _default(text: str) -> tuple[str, Value]:
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"--default {text!r}: expected NAME=VALUE, e.g. orders_count=0")
    for kind in (int, float):
        try:
            return name.strip(), kind(value)
        except ValueError:
            pass
    return name.strip(), value


def _resolve(target: str) -> object:
    """The object named by ``path/to/file.py:name`` or ``package.module:name``."""
    try:
        return load_object(target)
    except TargetError as error:
        raise ValueError(f"--table: {error}") from None


def _pick(found: object, entity: str | None, target: str) -> FeatureTable:
    """``found`` is a FeatureTable, or a collection of them from which ``entity`` picks one."""
    if isinstance(found, FeatureTable):
        candidates: Iterable[object] = [found]
    elif isinstance(found, dict):
        candidates = found.values()
    elif isinstance(found, list | tuple | set | frozenset):
        candidates = found
    else:
        raise TypeError(f"--table {target!r} is a {type(found).__name__}, not a FeatureTable")
    tables = [t for t in candidates if isinstance(t, FeatureTable)]
    if entity is not None:
        tables = [t for t in tables if t.entity == entity]
    if len(tables) != 1:
        names = ", ".join(t.entity for t in tables) or "none"
        raise LookupError(f"--table {target!r}: expected one table for --entity, found {names}")
    return tables[0]
