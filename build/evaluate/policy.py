"""The quality policy: which variant the build recommends per device.

A variant is *within the policy* when its headline metric (accuracy; entity F1 for token
classification) is at least ``min_relative_quality`` x the fp32 teacher's, both measured through
the serving runtime. Among those:

- ``cpu``: the highest batch-32 throughput from the build's one probe run over all variants (every
  variant timed in the same process, interleaved, so the figures compare).
- ``cuda``: the fp16 or fp32 variant with the fewest FLOPs per token, fp16 before fp32 at equal
  cost. The build runs without a GPU, so nothing is timed on CUDA: the choice follows from the
  architecture (FLOPs) and the precision a GPU runs natively (int8 kernels are CPU-oriented in ONNX
  Runtime, and a dynamically quantized graph falls back to CPU ops on CUDA).

When no variant is within the policy (a floor above 1, or the teacher missing), both devices get
the most accurate variant (:func:`best`). Pure functions of the variants: the server's ``best``
setting is the same function (``slimserve.service.variants.best``).
"""

from __future__ import annotations

from collections.abc import Mapping

from slimserve.service.store import Device, Task, Variant, headline_metric, precision_of
from slimserve.service.variants import best

__all__ = ["best", "precision_of", "recommend", "within_policy"]

GPU_PRECISIONS = ("fp16", "fp32")  # fp16 first: at equal FLOPs it is the faster on a GPU


def within_policy(
    variants: Mapping[str, Variant], task: Task, teacher_metric: float, min_relative_quality: float
) -> list[str]:
    """Names of the variants whose headline metric keeps ``min_relative_quality`` of the teacher's."""
    metric = headline_metric(task)
    floor = min_relative_quality * teacher_metric
    return sorted(n for n, v in variants.items() if metric in v.metrics and v.metrics[metric] >= floor)


def recommend(
    variants: Mapping[str, Variant], task: Task, teacher_metric: float, min_relative_quality: float
) -> dict[Device, str]:
    """``{"cpu": name, "cuda": name}`` under the policy (see the module docstring)."""
    if not variants:
        raise ValueError("no variants to recommend from")
    allowed = within_policy(variants, task, teacher_metric, min_relative_quality)
    if not allowed:
        fallback = best(variants, task)
        return {"cpu": fallback, "cuda": fallback}
    metric = headline_metric(task)

    def cpu_rank(name: str) -> tuple[float, float, float]:
        v = variants[name]
        # Unmeasured throughput ranks last; ties go to the more accurate, then the smaller file.
        return (v.throughput or -1.0, v.metrics[metric], -v.bytes)

    cpu = max(allowed, key=cpu_rank)
    gpu = [n for n in allowed if precision_of(n, variants[n]) in GPU_PRECISIONS]
    if not gpu:
        return {"cpu": cpu, "cuda": cpu}

    def cuda_rank(name: str) -> tuple[float, int, float, str]:
        v = variants[name]
        flops = v.architecture.flops_per_token if v.architecture else float("inf")
        return (flops, GPU_PRECISIONS.index(str(precision_of(name, v))), -v.metrics[metric], name)

    return {"cpu": cpu, "cuda": min(gpu, key=cuda_rank)}
