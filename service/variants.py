"""Which variant of a model version is served.

What is asked for comes from the settings: ``variants`` per model, else ``variant`` for every model
(``SLIMSERVE_VARIANTS`` / ``SLIMSERVE_VARIANT``). Each is one of

- ``recommended`` (the default): the variant the build recommends for the device under its quality
  policy (``manifest.recommended``: the fastest on CPU among those keeping the policy's share of the
  teacher's metric; the cheapest fp16/fp32 on CUDA). A version-1 manifest records none: int8 on CPU,
  fp16 on CUDA (:data:`PREFERENCE`), as before schema 2.
- ``best``: the most accurate variant by the task's headline metric (ties: the fastest).
- a variant name (``int8``, ``l3-int8``, ...): that one; a version lacking it is not loaded.

Pure functions of the manifest: no ONNX Runtime here, so the build's policy shares :func:`best`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from slimserve.service.store import Device, Manifest, Task, Variant, headline_metric

RECOMMENDED = "recommended"
BEST = "best"
POLICIES = (RECOMMENDED, BEST)

# Version-1 manifests (no recommendation recorded): int8 is fastest on CPU (fp16 is slower there:
# ORT casts back), fp16 is the GPU variant.
PREFERENCE: dict[Device, tuple[str, ...]] = {
    "cpu": ("int8", "fp32", "fp16"),
    "cuda": ("fp16", "fp32", "int8"),
}


class VariantNotFound(ValueError):
    """A setting names a variant the model version does not have."""


def _speed(variant: Variant) -> float:
    """Batch-32 sequences/s; unmeasured ranks below any measurement."""
    return variant.throughput or -1.0


def _cost(variant: Variant) -> float:
    """FLOPs per token; unknown ranks as the most expensive."""
    return float(variant.architecture.flops_per_token) if variant.architecture else math.inf


def best(variants: Mapping[str, Variant], task: Task) -> str:
    """The most accurate variant by the task's headline metric; ties go to the fastest (batch-32
    throughput), then the cheapest (FLOPs per token, then bytes), then the name."""
    if not variants:
        raise VariantNotFound("no variants to choose from")
    metric = headline_metric(task)

    def rank(name: str) -> tuple[float, float, float, int]:
        v = variants[name]
        return (v.metrics.get(metric, -math.inf), _speed(v), -_cost(v), -v.bytes)

    return max(sorted(variants), key=rank)  # max keeps the first of equals: the name decides last


def preferred(manifest: Manifest, device: Device) -> str:
    """The pre-schema-2 choice: by precision name, int8 on CPU and fp16 on CUDA."""
    for name in PREFERENCE[device]:
        if name in manifest.variants:
            return name
    return sorted(manifest.variants)[0]


def choose_variant(manifest: Manifest, wanted: str, device: Device, setting: str = "variant") -> str:
    """The variant to serve for ``wanted`` (``recommended``, ``best`` or a name) on ``device``.

    Raises :class:`VariantNotFound` naming ``setting`` when ``wanted`` is a name the manifest lacks."""
    if wanted == BEST:
        return best(manifest.variants, manifest.task)
    if wanted == RECOMMENDED:
        name = manifest.recommended.get(device)
        if name is not None and name in manifest.variants:
            return name
        return preferred(manifest, device)
    if wanted not in manifest.variants:
        raise VariantNotFound(
            f"variant {wanted!r} was asked for (setting {setting!r}) but the manifest has only "
            f"{', '.join(sorted(manifest.variants))} (or use {RECOMMENDED!r} / {BEST!r})"
        )
    return wanted
