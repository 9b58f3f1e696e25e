"""`slimserve build` and `slimserve models`. Nothing heavy at import time: torch and transformers
load inside the build, after the recipe and the data have been checked."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_STORE = Path("model_store")


def _fail(message: str) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return typer.Exit(1)


def build(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (see build/recipes/).", show_default=False)],
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            help="quick: a few minutes on a laptop CPU, for trying things out; full: all the data, "
            "the settings of the published models.",
        ),
    ] = "quick",
    store: Annotated[
        Path,
        typer.Option("--store", envvar="SLIMSERVE_STORE", help="Model store to publish into."),
    ] = DEFAULT_STORE,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar="SLIMSERVE_DATA_DIR",
            help="Local mirror of the data sets (sst2/, banking77/, conll2003/).",
            show_default=False,
        ),
    ] = None,
    keep_pytorch: Annotated[
        bool,
        typer.Option(
            "--keep-pytorch",
            help="Also publish the fine-tuned PyTorch model as <version>/pytorch/ (~90 MB, never served): "
            "the weights `slimserve bench` gives its transformers baseline.",
        ),
    ] = False,
) -> None:
    """Fine-tune, compress, export, verify and publish one model version.

    Variants that lose more than the recipe's gate against the PyTorch model are not published.
    Exit 1 with one message on stderr when anything fails; nothing is written to the store then."""
    if profile not in ("quick", "full"):
        raise typer.BadParameter("must be 'quick' or 'full'", param_hint="--profile")
    from slimserve.build.errors import BuildError
    from slimserve.build.recipe import load_recipe

    try:
        spec = load_recipe(recipe)
        spec.training(profile)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from slimserve.build.pipeline import BuildOptions, run_build

        result = run_build(spec, profile, store, data_dir, BuildOptions(keep_pytorch=keep_pytorch))
    except BuildError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        # Scratch space (the system temp dir) full or unwritable: still one message, exit 1.
        where = f"{exc.filename}: " if exc.filename else ""
        raise _fail(f"{where}{exc.strerror or exc}; nothing was published") from None
    refused = ", ".join(r.name for r in result.refused)
    typer.echo(
        f"published {result.name} version {result.version} "
        f"({', '.join(result.manifest.variants)}) at {result.path}"
        + (f"; refused by the gate: {refused}" if refused else "")
    )


def _metrics(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())


def models(
    store: Annotated[
        Path,
        typer.Option("--store", envvar="SLIMSERVE_STORE", help="Model store to list."),
    ] = DEFAULT_STORE,
) -> None:
    """List the store: name, task, versions, variants and their metrics (latest version)."""
    from slimserve.service.store import StoreError, model_names, read_manifest, version_dir, versions

    names = model_names(store)
    if not names:
        typer.echo(f"no models in {store}")
        return
    rows = [["name", "task", "versions", "latest", "variant", "MB", "metrics"]]
    for name in names:
        found = versions(store, name)
        latest = found[-1]
        try:
            manifest = read_manifest(version_dir(store, name, latest))
        except StoreError as exc:
            rows.append([name, "?", ",".join(map(str, found)), str(latest), "-", "-", f"unreadable: {exc}"])
            continue
        for i, (variant, info) in enumerate(manifest.variants.items()):
            first = i == 0
            rows.append(
                [
                    name if first else "",
                    manifest.task if first else "",
                    ",".join(map(str, found)) if first else "",
                    str(latest) if first else "",
                    variant,
                    f"{info.bytes / 1e6:.1f}",
                    _metrics(info.metrics),
                ]
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
