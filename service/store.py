"""The model store on disk: layout, manifest schema and integrity checks.

Layout (the contract): ``<store>/<name>/<version>/manifest.json`` plus the files the manifest
lists. The manifest schema lives here so that ``build/`` writes exactly what ``service/`` reads.

Exceptions raised here derive from :class:`StoreError`; each names the file involved.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

# 2: variants carry precision, form and architecture; the manifest records the recommended variant
# per device and the quality policy behind it. Version-1 manifests still load (those fields default).
SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
# Optional (`slimserve build --keep-pytorch`): the fine-tuned model in Hugging Face layout, never served.
PYTORCH_DIR = "pytorch"

Task = Literal["sequence-classification", "token-classification"]
"""The task names, as manifests, recipes and /v1/models spell them; code names them by these constants."""
SEQUENCE_CLASSIFICATION: Final = "sequence-classification"
TOKEN_CLASSIFICATION: Final = "token-classification"
VariantName = str  # "fp32" | "fp16" | "int8" | "int8-static" | "<form>-<precision>" (e.g. "l3-int8")
Precision = Literal["fp32", "fp16", "int8", "int8-static"]
Device = Literal["cpu", "cuda"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8", "int8-static")
# The fine-tuned model's own variants; every other variant belongs to a compressed form.
TEACHER = "teacher"


def headline_metric(task: Task) -> str:
    """The one metric a variant is judged by: the quality policy, ``best`` and the frontier report."""
    return "f1" if task == "token-classification" else "accuracy"


class StoreError(Exception):
    """A model version cannot be read or trusted."""


class ManifestError(StoreError):
    """manifest.json is missing, unreadable or does not match the schema."""


class ChecksumError(StoreError):
    """A file's sha256 differs from the one recorded in the manifest."""


class PathError(StoreError):
    """A manifest names a file outside its version directory (absolute, ``..`` or a symlink out)."""


class Parity(BaseModel):
    """How closely a variant follows the PyTorch model it was exported from."""

    model_config = ConfigDict(extra="allow")

    max_abs_logit_diff: float
    label_agreement: float = Field(description="share of argmax labels equal to PyTorch's, 0..1")


class Architecture(BaseModel):
    """The encoder a variant runs: what pruning and distillation changed, and what it costs."""

    model_config = ConfigDict(extra="allow")

    layers: int
    heads: list[int] = Field(description="attention heads kept, per layer")
    ffn: list[int] = Field(description="FFN intermediate width, per layer")
    parameters: int = Field(description="all parameters, embeddings and head included")
    flops_per_token: int = Field(
        description="multiply-adds x 2 of the encoder per token at the model's max_seq_len "
        "(matrix products and attention scores; embeddings, norms and activations left out)"
    )


class Variant(BaseModel):
    model_config = ConfigDict(extra="allow")

    file: str
    sha256: str
    bytes: int
    metrics: dict[str, float] = Field(
        description="accuracy/macro_f1 (classification) or f1 (NER) on the evaluation split, "
        "measured through the serving runtime"
    )
    parity: Parity
    latency_ms: dict[str, float] = Field(
        default_factory=dict, description="batch_1 and batch_32 medians, one probe run over all variants"
    )
    # Schema 2. A version-1 manifest's variants are the teacher's own, named by their precision.
    precision: Precision | None = None
    form: str = Field(default=TEACHER, description="'teacher' or the recipe's name of a compressed form")
    architecture: Architecture | None = None

    @property
    def throughput(self) -> float | None:
        """Batch-32 sequences per second from the probe, when measured."""
        ms = self.latency_ms.get("batch_32")
        return 32_000.0 / ms if ms else None


def precision_of(name: VariantName, variant: Variant) -> Precision | None:
    """The variant's precision; a version-1 variant's name is its precision."""
    if variant.precision is not None:
        return variant.precision
    return next((p for p in PRECISIONS if p == name), None)


class Policy(BaseModel):
    """How the build chose ``recommended``: the fastest variant keeping this share of the teacher's
    headline metric (fp32 teacher, measured through the serving runtime)."""

    model_config = ConfigDict(extra="allow")

    metric: str
    min_relative_quality: float
    teacher: float = Field(description="the fp32 teacher's headline metric")


class DataInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    source: str
    sha256: str


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    name: str
    version: int
    task: Task
    labels: list[str]
    max_seq_len: int
    base_model: str
    data: DataInfo
    recipe: dict[str, Any]
    created_at: datetime
    variants: dict[VariantName, Variant]
    reference_metrics: dict[str, float] = Field(
        default_factory=dict, description="the PyTorch model's metrics on the same split"
    )
    tokenizer: str = TOKENIZER
    files: dict[str, str] = Field(
        default_factory=dict,
        description="sha256 of every other file the service reads (tokenizer.json and what it needs, ONNX "
        "external data), keyed by path relative to the version directory; checked before serving",
    )
    recommended: dict[Device, VariantName] = Field(
        default_factory=dict, description="schema 2: the variant the build recommends per device"
    )
    policy: Policy | None = None

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_names(store: Path) -> list[str]:
    """Models that have at least one published version, sorted by name."""
    if not store.is_dir():
        return []
    return sorted(p.name for p in store.iterdir() if p.is_dir() and versions(store, p.name))


def versions(store: Path, name: str) -> list[int]:
    """Published versions of a model, ascending. Temporary (dot-prefixed) directories never count."""
    model_dir = store / name
    if not model_dir.is_dir():
        return []
    # ASCII digits only: str.isdigit() also accepts '²' or '٣', which int() then refuses or misreads.
    found = [int(p.name) for p in model_dir.iterdir() if p.name.isascii() and p.name.isdigit() and p.is_dir()]
    return sorted(v for v in found if v > 0)


def version_dir(store: Path, name: str, version: int) -> Path:
    return store / name / str(version)


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: no manifest") from exc
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: unreadable manifest ({exc})") from exc
    try:
        return Manifest.model_validate(raw)
    except ValueError as exc:
        raise ManifestError(f"{path}: manifest does not match the schema: {exc}") from exc


def inside(directory: Path, relative: str) -> Path:
    """``directory / relative``, refused unless it stays inside ``directory`` once symlinks resolve."""
    candidate = Path(relative)
    path = directory / candidate
    if (
        candidate.is_absolute()
        or ".." in candidate.parts
        or not path.resolve().is_relative_to(directory.resolve())
    ):
        raise PathError(f"{directory / MANIFEST}: {relative!r} leaves the version directory")
    return path


def _check(path: Path, expected: str) -> None:
    if not path.is_file():
        raise ChecksumError(f"{path}: file listed in the manifest is missing")
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"{path}: sha256 {actual[:12]}... does not match the manifest's {expected[:12]}..."
        )


def verify_checksums(directory: Path, manifest: Manifest, variants: list[str] | None = None) -> None:
    """Check the sha256 of every listed variant file (all when ``variants`` is None) and of every
    other file in ``manifest.files``; every path must stay inside ``directory``."""
    names = list(manifest.variants) if variants is None else variants
    inside(directory, manifest.tokenizer)
    for name in names:
        if name not in manifest.variants:
            raise ManifestError(f"{directory / MANIFEST}: no variant {name!r}")
        variant = manifest.variants[name]
        _check(inside(directory, variant.file), variant.sha256)
    for relative, digest in sorted(manifest.files.items()):
        _check(inside(directory, relative), digest)
