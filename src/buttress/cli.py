"""The ``buttress`` command line. Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from buttress.config import ConfigError, load_settings

app = typer.Typer(
    name="buttress", no_args_is_help=True, add_completion=False,
    help="Serve ML models over HTTP with resiliency built in.")

HostOption = Annotated[str | None, typer.Option("--host", help="Interface to bind.")]
PortOption = Annotated[int | None, typer.Option("--port", help="Port to listen on.")]
ConfigOption = Annotated[str | None, typer.Option("--config", help="Path to buttress.toml.")]


@app.callback()
def _root() -> None:
    """buttress: resilient real-time ML prediction services."""


def _fail(message: str) -> None:
    typer.echo(f"buttress: error: {message}", err=True)
    raise typer.Exit(code=2)


@app.command()
def serve(
    target: Annotated[str, typer.Argument(help="path/to/file.py:service or module:service")],
    host: HostOption = None,
    port: PortOption = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Worker processes.")] = None,
    config: ConfigOption = None,
) -> None:
    """Serve a prediction service over HTTP."""
    from buttress.server import TargetError
    from buttress.server import serve as run_server

    try:
        settings = load_settings(config, host=host, port=port, workers=workers)
        run_server(target, settings, config)
    except (ConfigError, TargetError) as error:
        _fail(str(error))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
