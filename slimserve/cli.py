"""The `slimserve` command. Each sub-command lives beside the code it drives; this module only
assembles them. Nothing here imports torch: the build commands import it when they run."""

from __future__ import annotations

import typer

from slimserve.bench.cli import bench
from slimserve.build.cli import build, models, report
from slimserve.service.cli import serve

app = typer.Typer(
    name="slimserve",
    help="Build compressed NLP models into a versioned store, and serve them over HTTP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command(name="build")(build)
app.command(name="models")(models)
app.command(name="serve")(serve)
app.command(name="report")(report)
app.command(name="bench")(bench)
