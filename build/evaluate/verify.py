"""Verify: score every ONNX variant through the serving code (runner, tokenizer, decoder), compare
it with the PyTorch model it came from, and gate it.

Gate policy (recipe ``gate``): a quantized variant (fp16, int8, int8-static) may lose at most the
allowance (points, 0..100) against its own fp32 graph; an fp32 graph against its own PyTorch model;
and every variant of a compressed form must keep ``min_relative_quality`` of the fp32 teacher's
headline metric. Passing variants are published even when another one was refused; when none passes,
the build fails and nothing is published.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from slimserve.build.evaluate.metrics import EvalBatches, headline, parity, score
from slimserve.build.recipe import GateSpec
from slimserve.service.engine.runner import OnnxRunner
from slimserve.service.store import TEACHER, Architecture, Task


@dataclass(frozen=True, slots=True)
class VerifyConfig:
    latency_repeats: int = 10
    intra_op_threads: int = 0


@dataclass(frozen=True, slots=True)
class Candidate:
    """One ONNX file to verify, and what it is."""

    name: str
    path: Path
    precision: str
    form: str = TEACHER
    architecture: Architecture | None = None


@dataclass
class VariantReport:
    name: str
    path: Path
    metrics: dict[str, float]
    max_abs_logit_diff: float
    label_agreement: float
    bytes: int
    precision: str = "fp32"
    form: str = TEACHER
    architecture: Architecture | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)  # filled by the probe
    passed: bool = True
    reason: str = ""


def verify_variant(
    candidate: Candidate,
    task: Task,
    labels: list[str],
    reference: list[np.ndarray],
    data: EvalBatches,
    config: VerifyConfig = VerifyConfig(),
) -> VariantReport:
    """Metrics and parity of one variant; ``reference`` is its own PyTorch model's logits."""
    runner = OnnxRunner(candidate.path, intra_op_threads=config.intra_op_threads)
    logits = [runner.run(b.input_ids, b.attention_mask, b.token_type_ids) for b in data.batches]
    diff, agreement = parity(reference, logits, data)
    return VariantReport(
        name=candidate.name,
        path=candidate.path,
        metrics=score(task, labels, logits, data),
        max_abs_logit_diff=diff,
        label_agreement=agreement,
        bytes=candidate.path.stat().st_size,
        precision=candidate.precision,
        form=candidate.form,
        architecture=candidate.architecture,
    )


def gate(
    reports: list[VariantReport], pytorch: dict[str, dict[str, float]], task: Task, spec: GateSpec
) -> None:
    """Mark each report passed or refused (with the reason), in place. ``pytorch`` holds each form's
    PyTorch metrics (the teacher's under ``"teacher"``)."""
    key = headline(task)
    allowed = spec.max_f1_drop if task == "token-classification" else spec.max_accuracy_drop
    field_name = "max_f1_drop" if task == "token-classification" else "max_accuracy_drop"
    fp32 = {r.form: r for r in reports if r.precision == "fp32"}
    teacher = fp32.get(TEACHER)
    for report in reports:
        reasons = []
        own = fp32.get(report.form)
        if report.precision == "fp32" or own is None:
            base, base_name = pytorch[report.form][key], "its PyTorch model"
        else:
            base, base_name = own.metrics[key], f"its fp32 graph ({own.name})"
        drop = (base - report.metrics[key]) * 100
        # Compare in points rounded to 1e-6 so float noise never refuses an identical model.
        if round(drop, 6) > allowed:
            reasons.append(
                f"{key} {report.metrics[key]:.4f} is {drop:.2f} points below {base_name}'s {base:.4f}; "
                f"the recipe allows {field_name} = {allowed}"
            )
        if report.form != TEACHER and teacher is not None:
            floor = spec.min_relative_quality * teacher.metrics[key]
            if round(report.metrics[key] - floor, 6) < 0:
                reasons.append(
                    f"{key} {report.metrics[key]:.4f} is under {spec.min_relative_quality:.0%} of the fp32 "
                    f"teacher's {teacher.metrics[key]:.4f} ({floor:.4f}; recipe gate.min_relative_quality)"
                )
        if reasons:
            report.passed = False
            report.reason = "; ".join(reasons)
