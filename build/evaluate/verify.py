"""Verify: score every ONNX variant through the serving code (runner, tokenizer, decoder) and gate
it against the PyTorch model it came from.

Gate policy: a variant whose headline metric (accuracy, or entity F1 for NER) falls more than the
recipe's allowance (points, 0..100) below the PyTorch model is refused and not published. The
passing variants are published even when another one was refused; when none passes, the build
fails and nothing is published.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from slimserve.build.evaluate.metrics import EvalBatches, headline, parity, score
from slimserve.build.recipe import GateSpec
from slimserve.service.engine.runner import OnnxRunner
from slimserve.service.engine.tokenizer import pad
from slimserve.service.store import Task


@dataclass(frozen=True, slots=True)
class VerifyConfig:
    latency_repeats: int = 10
    intra_op_threads: int = 0


@dataclass
class VariantReport:
    name: str
    path: Path
    metrics: dict[str, float]
    max_abs_logit_diff: float
    label_agreement: float
    latency_ms: dict[str, float]
    bytes: int
    passed: bool = True
    reason: str = ""
    extra: dict[str, object] = field(default_factory=dict)


def _runner_logits(runner: OnnxRunner, data: EvalBatches) -> list[np.ndarray]:
    return [runner.run(b.input_ids, b.attention_mask, b.token_type_ids) for b in data.batches]


def _latency(runner: OnnxRunner, data: EvalBatches, repeats: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for size in (1, 32):
        batch = pad(data.encodings[:size])
        runner.run(batch.input_ids, batch.attention_mask, batch.token_type_ids)  # warm-up
        times = []
        for _ in range(repeats if size == 1 else max(3, repeats // 3)):
            start = time.perf_counter()
            runner.run(batch.input_ids, batch.attention_mask, batch.token_type_ids)
            times.append((time.perf_counter() - start) * 1000)
        out[f"batch_{size}"] = round(statistics.median(times), 3)
    return out


def verify_variant(
    name: str,
    path: Path,
    task: Task,
    labels: list[str],
    reference: list[np.ndarray],
    data: EvalBatches,
    config: VerifyConfig = VerifyConfig(),
) -> VariantReport:
    runner = OnnxRunner(path, intra_op_threads=config.intra_op_threads)
    logits = _runner_logits(runner, data)
    diff, agreement = parity(reference, logits, data)
    return VariantReport(
        name=name,
        path=path,
        metrics=score(task, labels, logits, data),
        max_abs_logit_diff=diff,
        label_agreement=agreement,
        latency_ms=_latency(runner, data, config.latency_repeats),
        bytes=path.stat().st_size,
    )


def gate(reports: list[VariantReport], reference: dict[str, float], task: Task, spec: GateSpec) -> None:
    """Mark each report passed or refused (with the reason), in place."""
    key = headline(task)
    allowed = spec.max_f1_drop if task == "token-classification" else spec.max_accuracy_drop
    field_name = "max_f1_drop" if task == "token-classification" else "max_accuracy_drop"
    for report in reports:
        drop = (reference[key] - report.metrics[key]) * 100
        # Compare in points rounded to 1e-6 so float noise never refuses an identical model.
        if round(drop, 6) > allowed:
            report.passed = False
            report.reason = (
                f"{key} {report.metrics[key]:.4f} is {drop:.2f} points below the PyTorch model's "
                f"{reference[key]:.4f}; the recipe allows {field_name} = {allowed}"
            )
