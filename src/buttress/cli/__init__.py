"""The ``buttress`` command line (typer): serve, demo, features and the other subcommands."""

from buttress.cli.app import app, main

__all__ = ["app", "main"]
