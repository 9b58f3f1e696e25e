"""Placeholder: replaced by the service command's owner."""

import typer


def serve() -> None:
    raise typer.Exit(1)
