"""The frontier report: every variant of one model version on one accuracy / speed / size table, and
a plot of the headline metric against batch-32 throughput (PNG and SVG).

The build writes ``report.md``, ``frontier.png`` and ``frontier.svg`` into the version directory
(:func:`write_report`); ``slimserve report`` prints the same table for any published version and
writes the plot where asked. Everything comes from the manifest: the figures are the build's own
(metrics through the serving runtime, latency from its one probe run over all variants on the build
machine), so compare rows with each other, not with another machine.

matplotlib is in the ``build`` extra only and is imported when a plot is drawn (Agg, no display).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slimserve.service.store import Architecture, Manifest, headline_metric, precision_of

REPORT = "report.md"
PNG = "frontier.png"
SVG = "frontier.svg"
# One colour per precision in every report, legend in this order.
PALETTE = {"fp32": "tab:blue", "fp16": "tab:orange", "int8": "tab:green", "int8-static": "tab:red"}


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed (the serving install): the table works, the plot does not."""


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    precision: str
    form: str
    metric: float | None
    drop_points: float | None  # (metric - teacher) x 100: negative is a loss
    batch_1_ms: float | None
    throughput: float | None  # batch-32 sequences/s
    bytes: int
    architecture: Architecture | None
    recommended: tuple[str, ...]  # devices that recommend this variant


def teacher_metric(manifest: Manifest) -> float | None:
    """The reference every drop is measured against: the policy's teacher figure, else the fp32
    variant's (version 1), else the PyTorch model's."""
    metric = headline_metric(manifest.task)
    if manifest.policy is not None:
        return manifest.policy.teacher
    fp32 = manifest.variants.get("fp32")
    if fp32 is not None and metric in fp32.metrics:
        return fp32.metrics[metric]
    return manifest.reference_metrics.get(metric)


def rows(manifest: Manifest) -> list[Row]:
    """One row per variant, in the manifest's order."""
    metric = headline_metric(manifest.task)
    teacher = teacher_metric(manifest)
    out = []
    for name, v in manifest.variants.items():
        value = v.metrics.get(metric)
        out.append(
            Row(
                name=name,
                precision=precision_of(name, v) or "?",
                form=v.form,
                metric=value,
                drop_points=(value - teacher) * 100 if value is not None and teacher is not None else None,
                batch_1_ms=v.latency_ms.get("batch_1"),
                throughput=v.throughput,
                bytes=v.bytes,
                architecture=v.architecture,
                recommended=tuple(d for d, n in manifest.recommended.items() if n == name),
            )
        )
    return out


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (throughput, metric) no other point beats on both (ties kept), ordered
    by throughput: the frontier."""
    front = [
        i
        for i, (x, y) in enumerate(points)
        if not any(x2 >= x and y2 >= y and (x2 > x or y2 > y) for x2, y2 in points)
    ]
    return sorted(front, key=lambda i: points[i][0])


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


def _span(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def arch_summary(arch: Architecture | None) -> str:
    """``6L 12h 1536ffn 22.7M params 2.9G FLOPs/token`` (ranges when pruning made layers differ)."""
    if arch is None:
        return "-"
    heads = _span(arch.heads) if arch.heads else "?"
    ffn = _span(arch.ffn) if arch.ffn else "?"
    return (
        f"{arch.layers}L {heads}h {ffn}ffn {_si(arch.parameters)} params "
        f"{_si(arch.flops_per_token)} FLOPs/token"
    )


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(manifest: Manifest) -> str:
    metric = headline_metric(manifest.task)
    head = [
        "variant",
        "precision",
        "form",
        metric,
        "drop (points)",
        "batch-1 ms",
        "batch-32 seq/s",
        "MB",
        "parameters",
        "FLOPs/token",
        "recommended",
    ]
    body = [
        [
            r.name,
            r.precision,
            r.form,
            _fmt(r.metric, ".4f"),
            _fmt(r.drop_points, "+.2f"),
            _fmt(r.batch_1_ms, ".2f"),
            _fmt(r.throughput, ".0f"),
            f"{r.bytes / 1e6:.1f}",
            _si(r.architecture.parameters) if r.architecture else "-",
            _si(r.architecture.flops_per_token) if r.architecture else "-",
            ", ".join(r.recommended),
        ]
        for r in rows(manifest)
    ]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(head), rule, *(line(b) for b in body)])


def policy_line(manifest: Manifest) -> str:
    p = manifest.policy
    if p is None:
        return "No quality policy recorded in this manifest (those before schema 2 have none)."
    floor = p.min_relative_quality * p.teacher
    rec = ", ".join(f"{device}: `{name}`" for device, name in manifest.recommended.items()) or "none"
    return (
        f"Policy: {p.metric} >= {p.min_relative_quality:g} x teacher {p.teacher:.4f} = {floor:.4f}; "
        f"recommended {rec} (cpu: the fastest batch-32 throughput within the policy; cuda: the fp16/fp32 "
        "variant with the fewest FLOPs per token, chosen without a GPU)."
    )


def markdown(manifest: Manifest, plot_name: str | None = SVG) -> str:
    """The whole report.md."""
    parts = [
        f"# {manifest.name} v{manifest.version}: variants",
        "",
        f"Task {manifest.task}, base model `{manifest.base_model}`, "
        f"built {manifest.created_at:%Y-%m-%d %H:%M} UTC. Metrics are measured on the evaluation split "
        "through the serving runtime; latency is the build's one probe run over all variants on the "
        "build machine (compare rows, not machines).",
        "",
        policy_line(manifest),
        "",
        markdown_table(manifest),
        "",
    ]
    # The build keeps the gate's reasons in the manifest (an extra field): a variant it did not
    # publish still belongs on the page, with the figure that kept it out.
    refused = getattr(manifest, "refused", None) or {}
    if refused:
        parts += ["Not published (refused by the quality gate):", ""]
        parts += [f"- `{name}`: {reason}" for name, reason in refused.items()]
        parts.append("")
    if plot_name:
        parts += [f"![{headline_metric(manifest.task)} against batch-32 throughput]({plot_name})", ""]
    return "\n".join(parts)


def write_plot(manifest: Manifest, png: Path, svg: Path) -> list[Path]:
    """Headline metric against batch-32 throughput: point size by bytes, the Pareto frontier drawn,
    the recommended CPU variant ringed, every point labelled. Raises :class:`PlotUnavailable`
    without matplotlib."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailable(
            "the frontier plot needs matplotlib, which comes with the build extra "
            "(pip install 'slimserve[build]')"
        ) from exc
    matplotlib.rcParams["svg.hashsalt"] = "slimserve"  # stable element ids: the same SVG every run
    metric = headline_metric(manifest.task)
    measured = [r for r in rows(manifest) if r.throughput is not None and r.metric is not None]
    fig = Figure(figsize=(8, 5.5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(f"{manifest.name} v{manifest.version}: {metric} against throughput")
    ax.set_xlabel("batch-32 throughput (sequences/s, build machine)")
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(True, alpha=0.3)
    if not measured:
        ax.text(0.5, 0.5, "no latency was measured for this version", ha="center", transform=ax.transAxes)
    else:
        xs = [float(r.throughput or 0.0) for r in measured]
        ys = [float(r.metric or 0.0) * 100 for r in measured]
        biggest = max(r.bytes for r in measured) or 1
        sizes = [40 + 460 * r.bytes / biggest for r in measured]
        present = {r.precision for r in measured}
        precisions = [p for p in PALETTE if p in present] + sorted(present - set(PALETTE))
        colour = {p: PALETTE.get(p, "tab:gray") for p in precisions}
        for p in precisions:
            idx = [i for i, r in enumerate(measured) if r.precision == p]
            ax.scatter(
                [xs[i] for i in idx],
                [ys[i] for i in idx],
                s=[sizes[i] for i in idx],
                c=colour[p],
                alpha=0.6,
                edgecolors="black",
                linewidths=0.5,
                label=p,
                zorder=3,
            )
        front = pareto(list(zip(xs, ys, strict=True)))
        ax.step(
            [xs[i] for i in front],
            [ys[i] for i in front],
            where="post",  # the edge of what the frontier dominates
            color="black",
            linestyle="--",
            linewidth=1,
            label="Pareto frontier",
            zorder=2,
        )
        for r, x, y in zip(measured, xs, ys, strict=True):
            ax.annotate(r.name, (x, y), textcoords="offset points", xytext=(9, 9), fontsize=8)
        cpu = manifest.recommended.get("cpu")
        for r, x, y in zip(measured, xs, ys, strict=True):
            if r.name == cpu:
                ax.scatter([x], [y], s=700, facecolors="none", edgecolors="crimson", linewidths=2, zorder=4)
                ax.annotate(
                    "recommended (cpu)",
                    (x, y),
                    textcoords="offset points",
                    xytext=(9, -18),
                    fontsize=8,
                    color="crimson",
                )
        if manifest.policy is not None:
            floor = manifest.policy.min_relative_quality * manifest.policy.teacher * 100
            ax.axhline(floor, color="crimson", linestyle=":", linewidth=1, label="policy floor")
        if max(xs) > 4 * min(xs) > 0:
            ax.set_xscale("log")
        ax.margins(x=0.12, y=0.12)
        legend = ax.legend(loc="lower left", fontsize=8)
        from matplotlib.collections import PathCollection

        for handle in legend.legend_handles:
            if isinstance(handle, PathCollection):
                handle.set_sizes([50])  # precision colours, not file sizes
    fig.text(0.99, 0.005, "point area ~ file size", ha="right", fontsize=7, color="gray")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, format="png", metadata={"Software": None})
    fig.savefig(svg, format="svg", metadata={"Date": None})
    return [png, svg]


def write_report(manifest: Manifest, directory: Path) -> list[Path]:
    """Write ``report.md``, ``frontier.png`` and ``frontier.svg`` into ``directory`` (the build's
    version directory before publishing); returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    report = directory / REPORT
    report.write_text(markdown(manifest, SVG), encoding="utf-8")
    return [report, *write_plot(manifest, directory / PNG, directory / SVG)]


__all__ = [
    "PNG",
    "REPORT",
    "SVG",
    "PlotUnavailable",
    "arch_summary",
    "markdown",
    "markdown_table",
    "pareto",
    "rows",
    "teacher_metric",
    "write_plot",
    "write_report",
]
