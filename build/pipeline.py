"""The build, end to end: recipe -> data -> fine-tune -> export -> optimize -> fp16 -> int8 ->
verify -> gate -> publish. Data flows one way; each step is its own module with its own config.

Intermediate artefacts live in a private temporary directory outside the store; only publish
touches the store, and atomically.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from slimserve.build.convert.export import ExportConfig, export
from slimserve.build.convert.optimize import OptimizeConfig, optimize
from slimserve.build.convert.quantize import Fp16Config, Int8Config, to_fp16, to_int8
from slimserve.build.data.load import Dataset, load_dataset
from slimserve.build.errors import GateError
from slimserve.build.evaluate.metrics import EvalBatches, score
from slimserve.build.evaluate.verify import VariantReport, VerifyConfig, gate, verify_variant
from slimserve.build.publish import copy_files, publish
from slimserve.build.recipe import Recipe
from slimserve.service.engine.tokenizer import TextTokenizer
from slimserve.service.store import PYTORCH_DIR, TOKENIZER, DataInfo, Manifest, Parity, Variant, read_manifest


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
    head = ["variant", *keys, "max|dlogit|", "agree", "b1 ms", "b32 ms", "MB", "gate"]
    rows = [["pytorch", *(f"{reference[k]:.4f}" for k in keys), "-", "-", "-", "-", "-", "reference"]]
    for r in reports:
        rows.append(
            [
                r.name,
                *(f"{r.metrics[k]:.4f}" for k in keys),
                f"{r.max_abs_logit_diff:.4f}",
                f"{r.label_agreement:.4f}",
                f"{r.latency_ms.get('batch_1', 0):.2f}",
                f"{r.latency_ms.get('batch_32', 0):.1f}",
                f"{r.bytes / 1e6:.1f}",
                "pass" if r.passed else "REFUSED",
            ]
        )
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [head, *rows])


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
    dataset: Dataset = load_dataset(recipe, training, data_dir)
    say(
        f"[{recipe.name}] data: {len(dataset.train)} train / {len(dataset.eval)} eval examples "
        f"from {dataset.source}"
    )
    # torch and transformers load only once the cheap checks above have passed.
    from slimserve.build.train.finetune import encode, finetune, load_base, logits_of, save_pytorch

    with tempfile.TemporaryDirectory(prefix=f"slimserve-build-{recipe.name}-") as tmp:
        work = Path(tmp)
        model, tokenizer_json = load_base(recipe, work)
        train_tok = TextTokenizer(tokenizer_json, recipe.window(profile))
        serve_tok = TextTokenizer(tokenizer_json, recipe.max_seq_len)
        evaluation = EvalBatches.build(encode(serve_tok, recipe.task, dataset.eval), dataset.eval)

        say(f"[{recipe.name}] fine-tune ({profile} profile)")
        tuned = finetune(model, train_tok, recipe, training, dataset.train, evaluation)
        reference_logits = logits_of(model, evaluation)
        reference = score(recipe.task, recipe.labels, reference_logits, evaluation)

        say(f"[{recipe.name}] export -> optimize -> fp16 -> int8")
        raw = export(model, work / "model.raw.onnx", opts.export)
        cfg = model.config
        fused = optimize(
            raw,
            work / "model.fp32.onnx",
            OptimizeConfig(cfg.num_attention_heads, cfg.hidden_size, cfg.num_hidden_layers),
        )
        files: dict[str, Path] = {}
        for name in recipe.variants:
            if name == "fp32":
                files[name] = fused.path
            elif name == "fp16":
                files[name] = to_fp16(fused.path, work / "model.fp16.onnx", opts.fp16)
            elif name == "int8":
                quant = recipe.quantization
                source = fused.path if quant.int8_source == "fused" else raw
                config = replace(opts.int8, per_channel=quant.per_channel, reduce_range=quant.reduce_range)
                files[name] = to_int8(source, work / "model.int8.onnx", config)
        if opts.on_variants is not None:
            opts.on_variants(files)

        say(f"[{recipe.name}] verify {', '.join(files)} through the serving runtime")
        reports = [
            verify_variant(name, path, recipe.task, recipe.labels, reference_logits, evaluation, opts.verify)
            for name, path in files.items()
        ]
        gate(reports, reference, recipe.task, recipe.gate)
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

        def write(directory: Path, version: int) -> Manifest:
            published = {f"model.{r.name}.onnx": r.path for r in passed}
            published[TOKENIZER] = tokenizer_json
            digests = copy_files(published, directory)
            if opts.keep_pytorch:
                save_pytorch(model, tokenizer_json, directory / PYTORCH_DIR)
            manifest = Manifest(
                name=recipe.name,
                version=version,
                task=recipe.task,
                labels=list(recipe.labels),
                max_seq_len=recipe.max_seq_len,
                base_model=recipe.base_model,
                data=DataInfo(source=dataset.source, sha256=dataset.sha256),
                recipe={"profile": profile, **recipe.model_dump(mode="json")},
                created_at=datetime.now(UTC),
                variants={
                    r.name: Variant(
                        file=f"model.{r.name}.onnx",
                        sha256=digests[f"model.{r.name}.onnx"],
                        bytes=r.bytes,
                        metrics=r.metrics,
                        parity=Parity(
                            max_abs_logit_diff=r.max_abs_logit_diff, label_agreement=r.label_agreement
                        ),
                        latency_ms=r.latency_ms,
                    )
                    for r in passed
                },
                reference_metrics=reference,
                refused={r.name: r.reason for r in reports if not r.passed},
                build={
                    "profile": profile,
                    "seconds": round(time.perf_counter() - started, 1),
                    "train_examples": len(dataset.train),
                    "eval_examples": len(dataset.eval),
                    "steps": tuned.steps,
                    "best_epoch": tuned.best_epoch,
                    "history": tuned.history,
                    "fused_ops": fused.fused,
                },
            )
            manifest.write(directory)
            return manifest

        version, path = publish(store, recipe.name, write)
        manifest = read_manifest(path)
    seconds = time.perf_counter() - started
    say(f"[{recipe.name}] published version {version} at {path} ({seconds:.0f} s)")
    return BuildResult(recipe.name, version, path, manifest, reports, seconds)
