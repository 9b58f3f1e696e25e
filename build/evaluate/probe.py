"""The latency probe: every variant timed in one process, interleaved round by round on the same
padded batches (batch 1 and batch 32 of evaluation rows), so that the figures compare variants
under the same machine load rather than measure the load at different moments.

The sessions do not spin (as served: ``ort_spin`` is off by default). With spinning on, the idle
threads of the variant that just ran busy-wait through the next variant's run, and on 2 cores that
cost the small variants most: it measured the 3-layer int8 student at 1.43-1.52x the int8 teacher
where it runs 1.8-2.0x alone or without spinning (docs/BENCHMARKS.md, "Compression")."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np
from slimserve.build.evaluate.metrics import EvalBatches
from slimserve.service.engine.runner import OnnxRunner
from slimserve.service.engine.tokenizer import pad

K = TypeVar("K")


def probe(
    paths: Mapping[str, Path],
    data: EvalBatches,
    repeats: int = 10,
    threads: int = 0,
    pad_id: int = 0,
    spin: bool = False,
) -> dict[str, dict[str, float]]:
    """Median milliseconds per run: ``{variant: {"batch_1": ms, "batch_32": ms}}``; ``spin`` only to
    reproduce the old, biased measurement (bench/probe.py --spin)."""
    runners = {name: OnnxRunner(path, intra_op_threads=threads, spin=spin) for name, path in paths.items()}
    out: dict[str, dict[str, float]] = {name: {} for name in runners}
    for size in (1, 32):
        batch = pad(data.encodings[:size], pad_id)
        medians = interleaved_medians(
            runners, (batch.input_ids, batch.attention_mask, batch.token_type_ids), repeats
        )
        for name, ms in medians.items():
            out[name][f"batch_{size}"] = ms
    return out


def interleaved_medians(
    runners: Mapping[K, OnnxRunner], inputs: tuple[np.ndarray, ...], rounds: int, warmup: int = 1
) -> dict[K, float]:
    """Median milliseconds of one run of ``inputs`` per runner, the runners taking turns each round."""
    for runner in runners.values():
        for _ in range(warmup):
            runner.run(*inputs)  # first-run allocations stay out of the figures
    times: dict[K, list[float]] = {key: [] for key in runners}
    for _ in range(rounds):
        for key, runner in runners.items():
            start = time.perf_counter()
            runner.run(*inputs)
            times[key].append((time.perf_counter() - start) * 1000)
    return {key: round(statistics.median(values), 3) for key, values in times.items()}
