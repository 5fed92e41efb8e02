"""``buttress models ...``: register, list, promote and roll back model versions.

Every command takes ``--registry URL`` (else the ``registry_url`` setting from
``--config``/buttress.toml/``BUTTRESS_REGISTRY_URL``, default ``sqlite:///var/registry.db``)
and ``--models-dir``. Changes are recorded with the operator's login name and ``--reason``.
Errors are one line, ``buttress: error: ...``, exit status 2.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

from buttress.config import ConfigError, load_settings
from buttress.registry import Change, ModelVersion, Registry, RegistryError
from buttress.registry.formats import FORMATS

T = TypeVar("T")

app = typer.Typer(help="Model registry: register, list, promote and roll back versions.",
                  no_args_is_help=True)

RegistryOption = Annotated[str | None, typer.Option(
    "--registry", help="Registry URL (default: the registry_url setting).")]
ModelsDirOption = Annotated[str | None, typer.Option(
    "--models-dir", help="Artifact directory (default: the models_dir setting).")]
ConfigOption = Annotated[str | None, typer.Option("--config", help="Path to buttress.toml.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why, for the audit history.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.callback()
def models() -> None:
    """Model registry commands."""


def operator() -> str:
    """Who is at the keyboard, for the audit history."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container with an unknown uid)
        return "unknown"


def _fail(message: str) -> None:
    typer.echo(f"buttress: error: {message}", err=True)
    raise typer.Exit(code=2)


def _with_registry(registry: str | None, models_dir: str | None, config: str | None,
                   work: Callable[[Registry], Awaitable[T]]) -> T:
    async def run() -> T:
        settings = load_settings(config)
        async with Registry(registry or settings.registry_url,
                            models_dir=models_dir or settings.models_dir) as opened:
            return await work(opened)

    try:
        return asyncio.run(run())
    except (RegistryError, ConfigError, ValueError, OSError) as error:
        _fail(str(error) or type(error).__name__)
        raise  # unreachable: _fail exits


@app.command()
def register(
    name: Annotated[str, typer.Argument(help="The model's name, e.g. discount.")],
    path: Annotated[Path, typer.Argument(help="The artifact file (.onnx, .skops, .txt, ...).")],
    version: Annotated[str | None, typer.Option(help="Version (default v<n>).")] = None,
    format: Annotated[str | None, typer.Option(
        "--format", help=f"One of {', '.join(FORMATS)} (default: from the suffix).")] = None,
    notes: Annotated[str, typer.Option(help="Free text shown by models list.")] = "",
    allow_pickle: Annotated[bool, typer.Option(
        "--allow-pickle", help="Accept a joblib/pickle file (it runs code when loaded).")] = False,
    trust: Annotated[list[str] | None, typer.Option(
        "--trust", metavar="TYPE", help="A skops type to trust (repeatable).")] = None,
    candidate: Annotated[bool, typer.Option(
        "--candidate/--no-candidate", help="Point the candidate alias at it.")] = True,
    reason: ReasonOption = "",
    registry: RegistryOption = None, models_dir: ModelsDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Copy an artifact into the registry with its SHA-256; it becomes the candidate."""
    record = _with_registry(registry, models_dir, config, lambda r: r.register(
        name, path, who=operator(), version=version, format=format, notes=notes, why=reason,
        allow_pickle=allow_pickle, trusted_types=trust or (), candidate=candidate))
    typer.echo(f"{record.name} {record.version}: registered {record.format}, "
               f"{record.size} bytes, sha256 {record.sha256}"
               + (" (candidate)" if candidate else ""))


@app.command("import")
def import_model(
    name: Annotated[str, typer.Argument(help="The model's name in buttress.")],
    model_dir: Annotated[Path, typer.Argument(help="An MLflow model directory (has MLmodel).")],
    version: Annotated[str | None, typer.Option(help="Version (default v<n>).")] = None,
    allow_pickle: Annotated[bool, typer.Option(
        "--allow-pickle", help="Accept a pickled flavor (sklearn; it runs code when loaded).")
    ] = False,
    candidate: Annotated[bool, typer.Option(
        "--candidate/--no-candidate", help="Point the candidate alias at it.")] = True,
    reason: ReasonOption = "",
    registry: RegistryOption = None, models_dir: ModelsDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Register the model an MLflow model directory holds (onnx, lightgbm, sklearn flavors),
    without MLflow and without unpickling it."""
    from buttress.registry.from_mlflow import find_artifact

    async def run(r: Registry) -> ModelVersion:
        found = find_artifact(model_dir)
        return await r.register(name, found.path, who=operator(), version=version,
                                format=found.format, notes=found.notes, why=reason,
                                allow_pickle=allow_pickle, candidate=candidate)

    record = _with_registry(registry, models_dir, config, run)
    typer.echo(f"{record.name} {record.version}: imported {record.format} ({record.notes}), "
               f"{record.size} bytes, sha256 {record.sha256}")


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    version: Annotated[str, typer.Argument(help="The version to serve as stable.")],
    reason: ReasonOption = "",
    registry: RegistryOption = None, models_dir: ModelsDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Make VERSION the stable version; the old stable becomes previous."""
    change = _with_registry(registry, models_dir, config,
                            lambda r: r.promote(name, version, who=operator(), why=reason))
    if change is None:
        typer.echo(f"{name}: {version} is already stable; nothing changed")
    else:
        typer.echo(describe(change))


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    reason: ReasonOption = "",
    registry: RegistryOption = None, models_dir: ModelsDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Serve the previous stable version again; repeat to step back further."""
    change = _with_registry(registry, models_dir, config,
                            lambda r: r.rollback(name, who=operator(), why=reason))
    typer.echo(describe(change))


def describe(change: Change) -> str:
    moved = f"{change.alias} {change.from_version or '-'} -> {change.to_version}"
    return f"{change.name}: {change.action}: {moved}"


@app.command("list")
def list_models(
    name: Annotated[str | None, typer.Argument(help="One model: its versions.")] = None,
    as_json: JsonOption = False,
    registry: RegistryOption = None, models_dir: ModelsDirOption = None,
    config: ConfigOption = None,
) -> None:
    """The models and their aliases, or one model's versions (checksum, size, who, when, and
    which replicas serve it)."""
    from buttress.cli.models_view import models_table, versions_table
    from buttress.registry.summary import summarize

    payload = _with_registry(registry, models_dir, config, lambda r: summarize(r, name))
    if as_json:
        typer.echo(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())
        return
    console = Console(width=max(Console().width, 140))
    console.print(versions_table(payload) if name else models_table(payload))


@app.command()
def history(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    limit: Annotated[int, typer.Option(help="How many changes, newest last.")] = 20,
    registry: RegistryOption = None, models_dir: ModelsDirOption = None,
    config: ConfigOption = None,
) -> None:
    """The audit history of a model: who moved which alias, when and why."""
    async def read(r: Registry) -> list[Change]:
        await r.versions(name)  # an unknown model is an error, not an empty list
        return await r.history(name, limit)

    from buttress.cli.models_view import when

    table = Table("when (UTC)", "action", "alias", "from", "to", "who", "why")
    for change in _with_registry(registry, models_dir, config, read):
        table.add_row(when(change.at), change.action, change.alias or "", change.from_version
                      or "", change.to_version or "", change.who, change.why)
    Console(width=max(Console().width, 140)).print(table)

