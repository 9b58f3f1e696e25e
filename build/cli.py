"""`slimserve build`, `slimserve models` and `slimserve report`. Nothing heavy at import time: torch
and transformers load inside the build, after the recipe and the data have been checked; matplotlib
inside the report."""

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
            "the weights `slimserve bench` gives its transformers baseline, and a `base_model` a later "
            "build can compress without training it again (`epochs: 0`).",
        ),
    ] = False,
) -> None:
    """Fine-tune, compress, export, verify and publish one model version.

    Variants that lose more than the recipe's gate against the PyTorch model are not published.
    A model already fine-tuned elsewhere: set `base_model` to its checkpoint directory and the
    profile's `epochs: 0`; it is compressed and exported as it is (docs/build.md).
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
    """List the store: per model and version, every variant with its precision, form, architecture,
    size and metrics, and the variants the build recommends (cpu, cuda)."""
    from slimserve.build.report import arch_summary
    from slimserve.service.store import (
        StoreError,
        model_names,
        precision_of,
        read_manifest,
        version_dir,
        versions,
    )

    names = model_names(store)
    if not names:
        typer.echo(f"no models in {store}")
        return
    rows = [
        [
            "name",
            "task",
            "version",
            "variant",
            "precision",
            "form",
            "architecture",
            "MB",
            "metrics",
            "recommended",
        ]
    ]
    for name in names:
        for n, version in enumerate(versions(store, name)):
            first = n == 0
            try:
                manifest = read_manifest(version_dir(store, name, version))
            except StoreError as exc:
                rows.append([name if first else "", "?", str(version), *["-"] * 5, f"unreadable: {exc}", ""])
                continue
            for i, (variant, info) in enumerate(manifest.variants.items()):
                rec = ",".join(d for d, v in manifest.recommended.items() if v == variant)
                rows.append(
                    [
                        name if first and i == 0 else "",
                        manifest.task if first and i == 0 else "",
                        str(version) if i == 0 else "",
                        variant,
                        precision_of(variant, info) or "?",
                        info.form,
                        arch_summary(info.architecture),
                        f"{info.bytes / 1e6:.1f}",
                        _metrics(info.metrics),
                        rec,
                    ]
                )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    typer.echo(
        "recommended: the variant the build recommends per device, served by default "
        "(manifests before schema 2 recommend none: int8 is served on CPU, fp16 on CUDA)"
    )


def report(
    name: Annotated[
        str, typer.Argument(help="Model name in the store (e.g. sentiment).", show_default=False)
    ],
    version: Annotated[
        int | None,
        typer.Option(
            "--version", min=1, help="Version to report; the newest when not given.", show_default=False
        ),
    ] = None,
    store: Annotated[
        Path,
        typer.Option("--store", envvar="SLIMSERVE_STORE", help="Model store to read."),
    ] = DEFAULT_STORE,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Folder for the plot, written as <name>-v<version>-frontier.png and .svg "
            "(default: the current folder).",
        ),
    ] = Path("."),
) -> None:
    """Every variant of one version on one table (metric, drop vs the teacher in points, batch-1 ms,
    batch-32 sequences/s, MB, parameters, FLOPs per token, recommended) and the frontier plot:
    metric against batch-32 throughput, point size by bytes, the Pareto frontier drawn, the
    recommended CPU variant ringed. The figures are the build's own (its one probe run on the build
    machine). The plot needs matplotlib (the build extra)."""
    from slimserve.build.report import PlotUnavailable, markdown, write_plot
    from slimserve.service.store import StoreError, model_names, read_manifest, version_dir, versions

    found = versions(store, name)
    if not found:
        known = ", ".join(model_names(store)) or "none"
        raise _fail(f"no model {name!r} in the store {store} (models there: {known})")
    chosen = found[-1] if version is None else version
    if chosen not in found:
        listed = ", ".join(map(str, found))
        raise _fail(f"model {name!r} has no version {chosen} in the store {store} (versions: {listed})")
    try:
        manifest = read_manifest(version_dir(store, name, chosen))
    except StoreError as exc:
        raise _fail(str(exc)) from None
    stem = f"{name}-v{chosen}-frontier"
    typer.echo(markdown(manifest, plot_name=None))
    try:
        written = write_plot(manifest, out / f"{stem}.png", out / f"{stem}.svg")
    except PlotUnavailable as exc:
        raise _fail(f"{exc}; the table above is complete, the plot was not written") from None
    except OSError as exc:
        raise _fail(f"{exc.filename or out}: cannot write the plot ({exc.strerror or exc})") from None
    typer.echo("plot: " + ", ".join(str(p) for p in written))
