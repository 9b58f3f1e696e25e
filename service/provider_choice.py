"""Which execution provider serves a version, and which variant for that device.

The provider comes from the ``device`` setting (``auto`` takes CUDA when ONNX Runtime offers it); the
variant from ``variants.choose_variant`` (the settings ``variants`` per model, else ``variant``).
ONNX Runtime may still fall back to CPU (onnxruntime-gpu without a usable device): the CPU choice is
then opened and reported, rather than the GPU variant run on CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

from slimserve.service import store
from slimserve.service.engine.runner import CPU, CUDA, OnnxRunner, gpu_available
from slimserve.service.settings import Settings
from slimserve.service.variants import choose_variant

log = logging.getLogger(__name__)


def device_of(provider: str) -> store.Device:
    return "cuda" if provider == CUDA else "cpu"


def provider_wanted(settings: Settings) -> str:
    if settings.device == "cpu":
        return CPU
    if settings.device == "cuda" or gpu_available():
        return CUDA
    return CPU


def open_runner(directory: Path, manifest: store.Manifest, settings: Settings) -> tuple[str, OnnxRunner]:
    """The variant to serve and its opened runner. Its file's sha256 and the manifest's other files
    are checked first; every path must stay inside ``directory``. Raises VariantNotFound, StoreError
    or RunnerError."""
    s = settings
    name = manifest.name
    provider = provider_wanted(s)
    # Per model > global; "recommended" follows the device, "best" and names do not.
    setting = "variants" if name in s.variants else "variant"
    wanted = s.variants.get(name, s.variant)
    variant = choose_variant(manifest, wanted, device_of(provider), setting)
    store.verify_checksums(directory, manifest, [variant])
    providers = [CUDA, CPU] if provider == CUDA else [CPU]
    path = store.inside(directory, manifest.variants[variant].file)
    runner = OnnxRunner(path, providers, s.threads(on_gpu=provider == CUDA), s.ort_spin)
    if runner.provider != provider:
        log.warning("model %s: %s unavailable, ONNX Runtime runs on %s", name, provider, runner.provider)
    fallback = choose_variant(manifest, wanted, device_of(runner.provider), setting)
    if fallback != variant:
        # onnxruntime-gpu fell back to CPU: serve (and report) the CPU choice, not fp16 on CPU.
        variant = fallback
        store.verify_checksums(directory, manifest, [variant])
        path = store.inside(directory, manifest.variants[variant].file)
        runner = OnnxRunner(path, [CPU], s.threads(), s.ort_spin)
    return variant, runner
