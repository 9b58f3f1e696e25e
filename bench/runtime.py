"""Runtime benchmark: PyTorch eager fp32 vs ONNX Runtime fp32 vs ONNX Runtime int8, side by side.

    python -m slimserve.bench.runtime --store model_store --model sentiment

Batch 1 latency (one ~16-piece sentence) and batch 32 throughput (rows of exactly --seq-len pieces),
medians over interleaved repeats, so that a burst of load from elsewhere hits every engine alike.
The ONNX files are the published ones, run through the serving runner. The store holds no PyTorch
weights, so PyTorch runs the manifest's base architecture with a fresh head: the same shapes and
FLOPs, which is all that timing depends on. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from slimserve.service.engine.runner import OnnxRunner
from slimserve.service.engine.tokenizer import Batch, TextTokenizer, pad
from slimserve.service.store import read_manifest, version_dir, versions

SENTENCE = "the film is a charming , often funny and surprisingly moving portrait of a family"
Run = Callable[[Batch], object]


@dataclass
class Timing:
    name: str
    batch_1_ms: list[float]
    batch_32_ms: list[float]


def _rows(tokenizer: TextTokenizer, batch: int, length: int) -> Batch:
    """``batch`` rows of exactly ``length`` pieces (real words, repeated), no padding."""
    long_text = " ".join([SENTENCE] * (length // 8 + 2))
    backend = tokenizer.backend
    backend.enable_truncation(max_length=length)
    try:
        encodings = backend.encode_batch([long_text] * batch)
    finally:
        backend.enable_truncation(max_length=tokenizer.max_seq_len)
    return pad(encodings)


def _torch_runner(base_model: str, n_labels: int, threads: int) -> Run:
    import torch
    from slimserve.build.train.model_io import resolve_base
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(threads)
    model = AutoModelForSequenceClassification.from_pretrained(resolve_base(base_model), num_labels=n_labels)
    model.eval()

    def run(batch: Batch) -> object:
        with torch.inference_mode():
            return model(
                input_ids=torch.from_numpy(batch.input_ids),
                attention_mask=torch.from_numpy(batch.attention_mask),
                token_type_ids=torch.from_numpy(batch.token_type_ids),
            ).logits

    return run


def _onnx_runner(path: Path, threads: int) -> Run:
    runner = OnnxRunner(path, intra_op_threads=threads)
    return lambda b: runner.run(b.input_ids, b.attention_mask, b.token_type_ids)


def _time(run: Run, batch: Batch) -> float:
    start = time.perf_counter()
    run(batch)
    return (time.perf_counter() - start) * 1000


def measure(engines: dict[str, Run], small: Batch, large: Batch, repeats: int) -> list[Timing]:
    timings = {name: Timing(name, [], []) for name in engines}
    for run in engines.values():  # warm-up: first-call allocations and ORT's lazy init
        run(small)
        run(large)
    for _ in range(repeats):
        for name, run in engines.items():
            timings[name].batch_1_ms.append(_time(run, small))
        for name, run in engines.items():
            timings[name].batch_32_ms.append(_time(run, large))
    return list(timings.values())


def table(timings: list[Timing], rows: int) -> str:
    reference = statistics.median(timings[0].batch_32_ms)
    lines = [
        "| engine | batch 1 latency, ms (median) | batch 32 time, ms (median) | batch 32 throughput, seq/s | "
        "throughput vs first row |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in timings:
        b1, b32 = statistics.median(t.batch_1_ms), statistics.median(t.batch_32_ms)
        lines.append(
            f"| {t.name} | {b1:.2f} | {b32:.1f} | {rows * 1000 / b32:.0f} | {reference / b32:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, default=Path(os.environ.get("SLIMSERVE_STORE", "model_store")))
    parser.add_argument("--model", default="sentiment")
    parser.add_argument("--version", type=int, default=None, help="default: the latest")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch and ORT intra-op threads"
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64, help="pieces per row of the large batch")
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="one more ONNX file to time",
    )
    parser.add_argument("--no-torch", action="store_true", help="ORT only (no torch installed)")
    args = parser.parse_args(argv)

    found = versions(args.store, args.model)
    if not found:
        parser.error(f"no published version of {args.model!r} in {args.store}")
    version = args.version or found[-1]
    directory = version_dir(args.store, args.model, version)
    manifest = read_manifest(directory)
    tokenizer = TextTokenizer(directory / manifest.tokenizer, manifest.max_seq_len)
    small = pad(tokenizer.encode([SENTENCE]))
    large = _rows(tokenizer, args.batch, args.seq_len)

    engines: dict[str, Run] = {}
    if not args.no_torch:
        engines["PyTorch eager fp32"] = _torch_runner(manifest.base_model, len(manifest.labels), args.threads)
    for variant in ("fp32", "int8"):
        if variant in manifest.variants:
            engines[f"ORT {variant}"] = _onnx_runner(
                directory / manifest.variants[variant].file, args.threads
            )
    for extra in args.extra:
        name, _, path = extra.partition("=")
        engines[name] = _onnx_runner(Path(path), args.threads)

    timings = measure(engines, small, large, args.repeats)
    load = os.getloadavg()
    print(
        f"model {args.model} v{version}; batch 1 = {small.input_ids.shape[1]} pieces, batch {args.batch} x "
        f"{large.input_ids.shape[1]} pieces; {args.threads} thread(s); {args.repeats} interleaved repeats; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
    )
    print(table(timings, args.batch))
    shapes = {name: np.asarray(run(small)).shape for name, run in engines.items()}
    if len(set(shapes.values())) != 1:
        print(f"\nwarning: engines disagree on output shape: {shapes}")


if __name__ == "__main__":
    main()
