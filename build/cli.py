"""Placeholder: replaced by the build command's owner."""

import typer


def build() -> None:
    raise typer.Exit(1)


def models() -> None:
    raise typer.Exit(1)
