"""The build, end to end: recipe -> data -> fine-tune -> compress (distil, prune) -> export ->
optimize -> fp16 / int8 / int8-static -> verify -> probe -> gate -> recommend -> report -> publish.
Data flows one way; each step is its own module with its own config.

Intermediate artefacts live in a private temporary directory outside the store; only publish
touches the store, and atomically.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from slimserve.build.convert.export import ExportConfig, export
from slimserve.build.convert.optimize import OptimizeConfig, optimize
from slimserve.build.convert.quantize import (
    Fp16Config,
    Int8Config,
    StaticInt8Config,
    to_fp16,
    to_int8,
    to_int8_static,
)
from slimserve.build.data.load import Dataset, Examples, load_dataset
from slimserve.build.errors import GateError
from slimserve.build.evaluate.metrics import EvalBatches, headline, score
from slimserve.build.evaluate.probe import probe
from slimserve.build.evaluate.verify import Candidate, VariantReport, VerifyConfig, gate, verify_variant
from slimserve.build.publish import copy_files, publish
from slimserve.build.recipe import Recipe
from slimserve.service.engine.tokenizer import Batch, TextTokenizer, pad
from slimserve.service.store import (
    PYTORCH_DIR,
    TEACHER,
    TOKEN_CLASSIFICATION,
    TOKENIZER,
    DataInfo,
    Manifest,
    Parity,
    Policy,
    Variant,
    read_manifest,
)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class BuildOptions:
    export: ExportConfig = field(default_factory=ExportConfig)
    fp16: Fp16Config = field(default_factory=Fp16Config)
    int8: Int8Config = field(default_factory=Int8Config)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    # Also publish the fine-tuned PyTorch model (save_pretrained + tokenizer) as <version>/pytorch/:
    # what `slimserve bench` serves in its transformers baseline, so both sides run the same weights.
    keep_pytorch: bool = False
    # Test seam: sees (and may replace) the variant files before verification.
    on_variants: Callable[[dict[str, Path]], None] | None = None
    say: Callable[[str], None] = _stderr


@dataclass
class BuildResult:
    name: str
    version: int
    path: Path
    manifest: Manifest
    reports: list[VariantReport]
    seconds: float

    @property
    def refused(self) -> list[VariantReport]:
        return [r for r in self.reports if not r.passed]


def summary_table(reports: list[VariantReport], reference: dict[str, float]) -> str:
    keys = list(reference)
    head = ["variant", *keys, "max|dlogit|", "agree", "b1 ms", "b32 seq/s", "MB", "params", "gate"]
    rows = [["pytorch teacher", *(f"{reference[k]:.4f}" for k in keys), *["-"] * 6, "reference"]]
    for r in reports:
        b32 = r.latency_ms.get("batch_32")
        rows.append(
            [
                r.name,
                *(f"{r.metrics[k]:.4f}" for k in keys),
                f"{r.max_abs_logit_diff:.4f}",
                f"{r.label_agreement:.4f}",
                f"{r.latency_ms.get('batch_1', 0):.2f}",
                f"{32_000 / b32:.0f}" if b32 else "-",
                f"{r.bytes / 1e6:.1f}",
                f"{r.architecture.parameters / 1e6:.1f}M" if r.architecture else "-",
                "pass" if r.passed else "REFUSED",
            ]
        )
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [head, *rows])


def _variant_name(form: str, precision: str) -> str:
    return precision if form == TEACHER else f"{form}-{precision}"


def _convert(
    model: Any,
    form: str,
    precisions: list[str],
    recipe: Recipe,
    work: Path,
    calibration: list[Batch],
    opts: BuildOptions,
) -> tuple[list[Candidate], dict[str, int]]:
    """Export one PyTorch model and make each precision of it; returns the candidates and the fused
    operator counts."""
    from slimserve.build.compress.architecture import describe, head_size

    architecture = describe(model, recipe.max_seq_len)
    stem = "model" if form == TEACHER else f"model.{form}"
    raw = export(model, work / f"{stem}.raw.onnx", opts.export)
    heads = architecture.heads[0]
    fused = optimize(
        raw,
        work / f"{stem}.fused.onnx",
        OptimizeConfig(heads, heads * head_size(model), architecture.layers),
    )
    quant = recipe.quantization
    out: list[Candidate] = []
    for precision in precisions:
        name = _variant_name(form, precision)
        target = work / f"model.{name}.onnx"
        if precision == "fp32":
            path = fused.path
        elif precision == "fp16":
            path = to_fp16(fused.path, target, opts.fp16)
        elif precision == "int8":
            source = fused.path if quant.int8_source == "fused" else raw
            config = replace(opts.int8, per_channel=quant.per_channel, reduce_range=quant.reduce_range)
            path = to_int8(source, target, config)
        else:
            static = StaticInt8Config(per_channel=quant.per_channel, method=quant.calibration_method)
            path = to_int8_static(raw, target, calibration, static)
        out.append(Candidate(name, path, precision, form, architecture))
    return out, fused.fused


def _calibration(tokenizer: TextTokenizer, recipe: Recipe, train: Examples) -> list[Batch]:
    """A seeded sample of training rows at the serving window, in batches of 32."""
    from slimserve.build.train.model_io import encode

    rng = np.random.default_rng(recipe.seed)
    n = min(recipe.quantization.calibration_rows, len(train))
    picked = sorted(rng.choice(len(train), size=n, replace=False).tolist())
    encodings = encode(tokenizer, recipe.task, train.subset(picked))
    return [pad(encodings[i : i + 32], tokenizer.pad_id) for i in range(0, len(encodings), 32)]


@contextmanager
def _timed(seconds: dict[str, float], phase: str) -> Iterator[None]:
    """Add the block's wall time to ``seconds[phase]`` (a phase may run in several blocks)."""
    tick = time.perf_counter()
    try:
        yield
    finally:
        seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - tick


def run_build(
    recipe: Recipe,
    profile: str,
    store: Path,
    data_dir: Path | None,
    options: BuildOptions | None = None,
) -> BuildResult:
    """Build and publish one version of ``recipe``; raises a BuildError subclass on failure."""
    opts = options or BuildOptions()
    say = opts.say
    started = time.perf_counter()
    training = recipe.training(profile)
    forms = recipe.compress.forms_for(profile)
    dataset: Dataset = load_dataset(recipe, training, data_dir)
    say(
        f"[{recipe.name}] data: {len(dataset.train)} train / {len(dataset.eval)} eval examples "
        f"from {dataset.source}"
    )
    # torch and transformers load only once the cheap checks above have passed.
    from slimserve.build.train.finetune import finetune
    from slimserve.build.train.loop import TrainResult
    from slimserve.build.train.model_io import load_base, logits_of, save_pytorch

    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix=f"slimserve-build-{recipe.name}-") as tmp:
        work = Path(tmp)
        fine_tuned = recipe.fine_tuned_base(profile)
        model, tokenizer_json = load_base(recipe, work, fine_tuned=fine_tuned)
        train_tok = TextTokenizer(tokenizer_json, recipe.window(profile))
        serve_tok = TextTokenizer(tokenizer_json, recipe.max_seq_len)
        evaluation = EvalBatches.served(serve_tok, recipe.task, list(recipe.labels), dataset.eval)

        with _timed(seconds, "finetune"):
            if fine_tuned:
                say(
                    f"[{recipe.name}] fine-tune: skipped ({profile}: epochs 0; the base model is the teacher)"
                )
                tuned = TrainResult(model=model, best_epoch=0)
            else:
                say(f"[{recipe.name}] fine-tune ({profile} profile)")
                tuned = finetune(model, train_tok, recipe, training, dataset.train, evaluation)
        pytorch_logits = {TEACHER: logits_of(model, evaluation)}
        pytorch_metrics = {TEACHER: score(recipe.task, recipe.labels, pytorch_logits[TEACHER], evaluation)}
        reference = pytorch_metrics[TEACHER]

        say(f"[{recipe.name}] export -> optimize -> {', '.join(recipe.variants)}")
        calibration = (
            _calibration(serve_tok, recipe, dataset.train)
            if "int8-static" in recipe.variants or any("int8-static" in f.precisions for f in forms)
            else []
        )
        with _timed(seconds, "convert"):
            candidates, fused_ops = _convert(
                model, TEACHER, list(recipe.variants), recipe, work, calibration, opts
            )
        form_builds: dict[str, dict[str, Any]] = {}
        if forms:
            with _timed(seconds, "compress"):
                form_builds = _compress(
                    model, forms, recipe, profile, dataset.train, tokenizer_json, evaluation, say
                )
            with _timed(seconds, "convert"):
                for form in forms:
                    student = form_builds[form.name].pop("model")
                    pytorch_logits[form.name] = logits_of(student, evaluation)
                    pytorch_metrics[form.name] = score(
                        recipe.task, recipe.labels, pytorch_logits[form.name], evaluation
                    )
                    made, _ = _convert(
                        student, form.name, list(form.precisions), recipe, work, calibration, opts
                    )
                    candidates += made
                    del student
        if opts.on_variants is not None:
            files = {c.name: c.path for c in candidates}
            opts.on_variants(files)
            candidates = [replace(c, path=files[c.name]) for c in candidates]

        say(f"[{recipe.name}] verify {', '.join(c.name for c in candidates)} through the serving runtime")
        with _timed(seconds, "verify"):
            reports = [
                verify_variant(c, recipe.task, recipe.labels, pytorch_logits[c.form], evaluation, opts.verify)
                for c in candidates
            ]
        say(f"[{recipe.name}] latency probe: {len(reports)} variants interleaved in one process")
        with _timed(seconds, "probe"):
            latencies = probe(
                {r.name: r.path for r in reports},
                evaluation,
                opts.verify.latency_repeats,
                opts.verify.intra_op_threads,
                serve_tok.pad_id,
            )
        for r in reports:
            r.latency_ms = latencies[r.name]
        gate(reports, pytorch_metrics, recipe.task, recipe.gate)
        say(summary_table(reports, reference))
        for r in reports:
            if not r.passed:
                say(f"[{recipe.name}] variant {r.name} refused by the quality gate: {r.reason}")
        passed = [r for r in reports if r.passed]
        if not passed:
            reasons = "; ".join(f"{r.name}: {r.reason}" for r in reports)
            raise GateError(
                f"recipe {recipe.name!r}: no variant passed the quality gate ({reasons}); nothing published"
            )
        key = headline(recipe.task)
        teacher_fp32 = next((r for r in reports if r.form == TEACHER and r.precision == "fp32"), None)
        policy = Policy(
            metric=key,
            min_relative_quality=recipe.policy.min_relative_quality,
            teacher=teacher_fp32.metrics[key] if teacher_fp32 else reference[key],
        )

        def write(directory: Path, version: int) -> Manifest:
            from slimserve.build.evaluate.policy import recommend
            from slimserve.build.report import write_report

            published = {f"model.{r.name}.onnx": r.path for r in passed}
            published[TOKENIZER] = tokenizer_json
            digests = copy_files(published, directory)
            if opts.keep_pytorch:
                save_pytorch(model, tokenizer_json, directory / PYTORCH_DIR)
            variants = {
                r.name: Variant(
                    file=f"model.{r.name}.onnx",
                    sha256=digests[f"model.{r.name}.onnx"],
                    bytes=r.bytes,
                    metrics=r.metrics,
                    parity=Parity(max_abs_logit_diff=r.max_abs_logit_diff, label_agreement=r.label_agreement),
                    latency_ms=r.latency_ms,
                    precision=r.precision,  # type: ignore[arg-type]
                    form=r.form,
                    architecture=r.architecture,
                )
                for r in passed
            }
            manifest = Manifest(
                name=recipe.name,
                version=version,
                task=recipe.task,
                labels=list(recipe.labels),
                max_seq_len=recipe.max_seq_len,
                base_model=recipe.base_model,
                data=DataInfo(source=dataset.source, sha256=dataset.sha256),
                recipe={"profile": profile, **recipe.model_dump(mode="json", by_alias=True)},
                created_at=datetime.now(UTC),
                variants=variants,
                reference_metrics=reference,
                recommended=recommend(variants, recipe.task, policy.teacher, policy.min_relative_quality),
                policy=policy,
                refused={r.name: r.reason for r in reports if not r.passed},
                build={
                    "profile": profile,
                    "seconds": round(time.perf_counter() - started, 1),
                    "train_examples": len(dataset.train),
                    "eval_examples": len(dataset.eval),
                    "steps": tuned.steps,
                    "best_epoch": tuned.best_epoch,
                    "history": tuned.history,
                    "fused_ops": fused_ops,
                    "step_seconds": {k: round(v, 1) for k, v in seconds.items()},
                    "pytorch_metrics": pytorch_metrics,
                    "forms": form_builds,
                },
            )
            manifest.write(directory)
            write_report(manifest, directory)
            return manifest

        version, path = publish(store, recipe.name, write)
        manifest = read_manifest(path)
    total = time.perf_counter() - started
    say(
        f"[{recipe.name}] published version {version} at {path} ({total:.0f} s: "
        + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
        + ")"
    )
    say(f"[{recipe.name}] recommended: " + ", ".join(f"{d} {v}" for d, v in manifest.recommended.items()))
    return BuildResult(recipe.name, version, path, manifest, reports, total)


def _compress(
    teacher: Any,
    forms: list[Any],
    recipe: Recipe,
    profile: str,
    train: Examples,
    tokenizer_json: Path,
    evaluation: EvalBatches,
    say: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Make and train every compressed form's PyTorch model. Returns per form its trained model
    (under ``"model"``) and what the manifest records of its training."""
    from slimserve.build.compress.forms import Student, make_student, needs_importance, prune_student
    from slimserve.build.compress.prune import measure_importance
    from slimserve.build.train.distill import distill, teacher_logits
    from slimserve.build.train.finetune import gold_targets, label_tensor
    from slimserve.build.train.model_io import encode

    spec = recipe.student_training(profile)
    tokenizer = TextTokenizer(tokenizer_json, spec.max_seq_len or recipe.max_seq_len)
    examples = train
    if spec.max_train_rows is not None and spec.max_train_rows < len(train):
        rng = np.random.default_rng(recipe.seed + 1)
        examples = train.subset(
            sorted(rng.choice(len(train), size=spec.max_train_rows, replace=False).tolist())
        )
    encodings = encode(tokenizer, recipe.task, examples)
    targets = gold_targets(recipe, encodings, examples)
    tick = time.perf_counter()
    say(f"[{recipe.name}] teacher logits on {len(encodings)} training rows (computed once for every form)")
    soft = teacher_logits(teacher, encodings, tokenizer.pad_id)
    rng = np.random.default_rng(recipe.seed + 2)
    rows = rng.choice(
        len(encodings), size=min(recipe.compress.importance_rows, len(encodings)), replace=False
    )
    token_level = recipe.task == TOKEN_CLASSIFICATION
    importance_batches = []
    for start in range(0, len(rows), 32):
        idx = rows[start : start + 32]
        batch = pad([encodings[i] for i in idx], tokenizer.pad_id)
        importance_batches.append((batch, label_tensor(targets, idx, batch, token_level)))
    importance = None
    if needs_importance(forms):
        say(f"[{recipe.name}] head and neuron importance on {len(rows)} training rows")
        importance = measure_importance(teacher, importance_batches)
    shared = time.perf_counter() - tick
    out: dict[str, dict[str, Any]] = {}
    students: dict[str, Student] = {}
    for form in forms:
        tick = time.perf_counter()
        loss = form.distill or recipe.compress.distill
        if form.from_form is None:
            student = make_student(teacher, form, importance)
        else:
            base = students[form.from_form]
            say(f"[{recipe.name}] form {form.name}: importance measured on its base, {form.from_form}")
            student = prune_student(base, form, measure_importance(base.model, importance_batches))
        students[form.name] = student
        say(
            f"[{recipe.name}] form {form.name}: layers {student.layer_map}"
            + (f", from {form.from_form}" if form.from_form else "")
            + (f", {form.heads} heads" if form.heads else "")
            + (f", FFN {form.ffn}" if form.ffn else "")
            + f"; distilling ({spec.epochs} epoch(s), {len(encodings)} rows"
            + (f", hidden-state MSE x {loss.hidden_mse}" if loss.hidden_mse else "")
            + ")"
        )
        result = distill(
            student.model,
            teacher,
            encodings,
            targets,
            soft,
            recipe,
            spec,
            loss,
            evaluation,
            layer_map=student.layer_map,
            desc=f"distill {recipe.name}/{form.name}",
            pad_id=tokenizer.pad_id,
        )
        out[form.name] = {
            "model": student.model,
            "layer_map": student.layer_map,
            "from": form.from_form,
            "heads_kept": student.heads_kept,
            "neurons_kept_count": [len(n) for n in student.neurons_kept] if student.neurons_kept else None,
            "distill": loss.model_dump(),
            "train_examples": len(encodings),
            "steps": result.steps,
            "best_epoch": result.best_epoch,
            "history": result.history,
            "seconds": round(time.perf_counter() - tick + shared / len(forms), 1),
        }
    return out
