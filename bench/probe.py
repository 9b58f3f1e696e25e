"""Re-time the variants of a published version with the build's own latency probe, on this machine now.

    python -m slimserve.bench.probe NAME --store STORE [--version V] [--runs 3] [--repeats 10]

The probe is the one ``slimserve build`` runs (build/evaluate/probe.py: every variant in one process,
interleaved round by round, batch 1 and batch 32 of the evaluation rows through the serving runner);
this runs it ``--runs`` times and prints one markdown table: each run's batch-32 ratio to the int8
teacher, and the medians. The manifest is not changed. Use it to compare variants after a change to the
probe or the runtime, or on another machine, without rebuilding; it needs the build extra (the data
loader) and the data mirror (``--data-dir`` or ``SLIMSERVE_DATA_DIR``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

from slimserve.build.data.load import load_dataset
from slimserve.build.evaluate.metrics import EvalBatches
from slimserve.build.evaluate.probe import probe
from slimserve.build.recipe import parse_recipe
from slimserve.service.engine.tokenizer import TextTokenizer

REFERENCE = "int8"


def _version_dir(store: Path, name: str, version: int | None) -> Path:
    root = store / name
    if version is None:
        versions = [int(p.name) for p in root.iterdir() if p.name.isdigit()] if root.is_dir() else []
        if not versions:
            raise SystemExit(f"{root}: no published version")
        version = max(versions)
    return root / str(version)


def _evaluation(directory: Path, manifest: dict[str, Any], data_dir: Path) -> tuple[EvalBatches, int]:
    as_run = dict(manifest["recipe"])
    profile = as_run.pop("profile", None) or "quick"  # the build adds it to the recipe it records
    recipe = parse_recipe(as_run, f"{directory}/manifest.json recipe")
    dataset = load_dataset(recipe, recipe.training(profile), data_dir)
    tokenizer = TextTokenizer(directory / manifest["tokenizer"], recipe.max_seq_len)
    return EvalBatches.served(tokenizer, recipe.task, list(recipe.labels), dataset.eval), tokenizer.pad_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m slimserve.bench.probe", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("name", help="model name in the store")
    parser.add_argument("--store", type=Path, default=Path(os.environ.get("SLIMSERVE_STORE", "model_store")))
    parser.add_argument("--version", type=int, default=None, help="default: the highest")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("SLIMSERVE_DATA_DIR", "../shared/data"))
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="probe runs; the table gives each and the medians"
    )
    parser.add_argument("--repeats", type=int, default=10, help="rounds per batch size in one probe run")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: every core)")
    parser.add_argument(
        "--spin",
        action="store_true",
        help="let the sessions' idle threads spin, as the build's probe did before it was corrected: "
        "shows how much that cost the small variants",
    )
    args = parser.parse_args(argv)

    directory = _version_dir(args.store, args.name, args.version)
    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    evaluation, pad_id = _evaluation(directory, manifest, args.data_dir)
    paths = {name: directory / v["file"] for name, v in manifest["variants"].items()}
    runs = [probe(paths, evaluation, args.repeats, args.threads, pad_id, args.spin) for _ in range(args.runs)]

    def ratio(run: dict[str, dict[str, float]], name: str) -> float:
        return run[REFERENCE]["batch_32"] / run[name]["batch_32"] if REFERENCE in run else float("nan")

    recorded = {name: (v.get("latency_ms") or {}).get("batch_32") for name, v in manifest["variants"].items()}
    spinning = ", sessions spinning" if args.spin else ""
    print(
        f"{args.name} v{directory.name}: {args.runs} probe runs of {args.repeats} rounds{spinning}; "
        "b32 = batch 32"
    )
    print()
    head = ["variant", "b1 ms", "b32 seq/s", *(f"run {i + 1} x {REFERENCE}" for i in range(args.runs))]
    print("| " + " | ".join([*head, f"median x {REFERENCE}", "manifest b32 seq/s"]) + " |")
    print("|" + " --- |" + " ---: |" * (len(head) + 1))
    for name in paths:
        b1 = statistics.median(run[name]["batch_1"] for run in runs)
        b32 = statistics.median(run[name]["batch_32"] for run in runs)
        ratios = [ratio(run, name) for run in runs]
        cells = [name, f"{b1:.2f}", f"{32_000 / b32:.0f}", *(f"{r:.2f}" for r in ratios)]
        old = recorded[name]
        cells += [f"**{statistics.median(ratios):.2f}**", f"{32_000 / old:.0f}" if old else "-"]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
