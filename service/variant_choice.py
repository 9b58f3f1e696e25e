"""Which variant of a version to serve, and on which execution provider.

The provider comes from the ``device`` setting (``auto`` takes CUDA when ONNX Runtime offers it);
the variant from the ``variants`` setting when it forces one, else from the preference below. ONNX
Runtime may still fall back to CPU (onnxruntime-gpu without a usable device): then the CPU choice is
opened instead of running the GPU variant on CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

from slimserve.service import store
from slimserve.service.engine.runner import CPU, CUDA, OnnxRunner, gpu_available
from slimserve.service.errors import ReloadFailed
from slimserve.service.settings import Settings

log = logging.getLogger(__name__)

# Preference when no variant is forced: int8 is fastest on CPU (fp16 is slower there: ORT casts back),
# fp16 is the GPU variant.
PREFERENCE = {CPU: ("int8", "fp32", "fp16"), CUDA: ("fp16", "fp32", "int8")}


def choose_variant(manifest: store.Manifest, forced: str | None, provider: str) -> str:
    if forced is not None:
        if forced not in manifest.variants:
            raise ReloadFailed(
                f"model {manifest.name!r} v{manifest.version}: variant {forced!r} was asked for "
                f"(settings 'variants') but the manifest has only {sorted(manifest.variants)}"
            )
        return forced
    for name in PREFERENCE[provider]:
        if name in manifest.variants:
            return name
    return sorted(manifest.variants)[0]


def provider_wanted(settings: Settings) -> str:
    if settings.device == "cpu":
        return CPU
    if settings.device == "cuda" or gpu_available():
        return CUDA
    return CPU


def open_runner(directory: Path, manifest: store.Manifest, settings: Settings) -> tuple[str, OnnxRunner]:
    """The variant to serve and its opened runner; its file's sha256 (and the manifest's other files)
    are checked first. Raises ReloadFailed, StoreError or RunnerError."""
    provider = provider_wanted(settings)
    forced = settings.variants.get(manifest.name)
    variant = choose_variant(manifest, forced, provider)
    store.verify_checksums(directory, manifest, [variant])
    providers = [CUDA, CPU] if provider == CUDA else [CPU]
    threads = settings.threads(on_gpu=provider == CUDA)
    path = store.inside(directory, manifest.variants[variant].file)
    runner = OnnxRunner(path, providers, threads, settings.ort_spin)
    if (
        runner.provider != provider
        and forced is None
        and variant != choose_variant(manifest, None, runner.provider)
    ):
        # onnxruntime-gpu fell back to CPU: serve the CPU variant rather than fp16 on CPU.
        name = manifest.name
        log.warning("model %s: %s unavailable, ONNX Runtime runs on %s", name, provider, runner.provider)
        variant = choose_variant(manifest, None, runner.provider)
        store.verify_checksums(directory, manifest, [variant])
        path = store.inside(directory, manifest.variants[variant].file)
        runner = OnnxRunner(path, [CPU], settings.threads(), settings.ort_spin)
    return variant, runner
