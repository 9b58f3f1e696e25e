"""The models being served: loading from the store, choosing a variant, reloading without downtime.

A load reads the manifest, checks every sha256 it lists, opens the chosen variant in ONNX Runtime,
checks the graph's output width against the labels, warms the engine up, and only then makes it
visible. A reload does the same beside the serving engine and swaps on success; requests already in
the old engine finish there. Any failure leaves the old version serving, raises :class:`ReloadFailed`
with the cause, and counts in ``slimserve_model_reloads_total{outcome="failed"}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from slimserve.service import store
from slimserve.service.engine.batcher import BatchPolicy, DeviceSlot, Engine, EngineResult, EngineRetired
from slimserve.service.engine.runner import CPU, CUDA, OnnxRunner, RunnerError, gpu_available
from slimserve.service.engine.tokenizer import TextTokenizer
from slimserve.service.errors import ModelNotFound, ReloadFailed
from slimserve.service.metrics import Metrics
from slimserve.service.settings import Settings
from slimserve.service.tasks.base import Codec
from slimserve.service.tasks.classification import ClassificationCodec
from slimserve.service.variants import choose_variant

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Served:
    """What a loaded model reports (``/v1/models``, ``slimserve_model_info``)."""

    name: str
    version: int
    variant: str
    provider: str
    manifest: store.Manifest


def make_codec(manifest: store.Manifest, tokenizer: TextTokenizer, settings: Settings) -> Codec[Any]:
    if manifest.task == "sequence-classification":
        return ClassificationCodec(tokenizer, list(manifest.labels))
    from slimserve.service.tasks.token_classification import NerCodec

    return NerCodec(tokenizer, list(manifest.labels), settings.ner_stride)


def device_of(provider: str) -> store.Device:
    return "cuda" if provider == CUDA else "cpu"


def warmup_lengths(max_seq_len: int) -> list[int]:
    lengths = [n for n in (16, 32, 64, 128, 256, 512) if n < max_seq_len]
    return [*lengths, max_seq_len]


class Registry:
    def __init__(
        self, settings: Settings, metrics: Metrics, tokenize_pool: Executor, device_lock: DeviceSlot
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._pool = tokenize_pool
        self._device_lock = device_lock
        self._engines: dict[str, Engine] = {}
        self._served: dict[str, Served] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.ready = False
        self.loading_error: str | None = None
        self._retiring: set[asyncio.Task[None]] = set()  # old engines draining after a swap
        self._refused: dict[str, int] = {}  # newest version polling already refused, per model

    # -- queries -----------------------------------------------------------------------------------

    def served(self) -> list[Served]:
        return [self._served[n] for n in sorted(self._served)]

    def get(self, name: str, task: str) -> Served:
        served = self._served.get(name)
        if served is None:
            known = ", ".join(sorted(self._served)) or "none"
            raise ModelNotFound(f"no model named {name!r} is served (served: {known})")
        if served.manifest.task != task:
            raise ModelNotFound(f"model {name!r} is a {served.manifest.task} model, not {task}")
        return served

    def target_names(self) -> list[str]:
        names = store.model_names(self.settings.store)
        return [n for n in names if n in self.settings.models] if self.settings.models else names

    async def infer(
        self, name: str, task: str, texts: list[str], params: Any, deadline: float
    ) -> tuple[Served, EngineResult]:
        for _ in range(3):  # a reload can retire the engine between lookup and submit
            served = self.get(name, task)
            engine = self._engines[name]
            try:
                return served, await engine.submit(texts, params, deadline)
            except EngineRetired:
                continue
        raise ModelNotFound(f"model {name!r} is being replaced; retry")

    # -- loading -----------------------------------------------------------------------------------

    def _provider_wanted(self) -> str:
        if self.settings.device == "cpu":
            return CPU
        if self.settings.device == "cuda" or gpu_available():
            return CUDA
        return CPU

    def _load(self, name: str, version: int | None) -> tuple[Served, Engine]:
        """Blocking: build a warmed, started engine for one model version (newest when None)."""
        s = self.settings
        available = store.versions(s.store, name)
        if version is None:
            version = s.pins.get(name) or (available[-1] if available else None)
        if version is None or version not in available:
            raise ReloadFailed(f"model {name!r}: version {version} is not in the store {s.store}")
        directory = store.version_dir(s.store, name, version)
        try:
            manifest = store.read_manifest(directory)
            if manifest.name != name or manifest.version != version:
                raise ReloadFailed(
                    f"{directory / store.MANIFEST}: says {manifest.name!r} v{manifest.version}, "
                    f"but lives at {name}/{version}"
                )
            provider = self._provider_wanted()
            # Per model > global; "recommended" follows the device, "best" and names do not.
            setting = "variants" if name in s.variants else "variant"
            wanted = s.variants.get(name, s.variant)
            variant = choose_variant(manifest, wanted, device_of(provider), setting)
            store.verify_checksums(directory, manifest)
            tokenizer = TextTokenizer(directory / manifest.tokenizer, manifest.max_seq_len)
            providers = [CUDA, CPU] if provider == CUDA else [CPU]
            threads = s.threads(on_gpu=provider == CUDA)
            runner = OnnxRunner(directory / manifest.variants[variant].file, providers, threads, s.ort_spin)
            if runner.provider != provider:
                log.warning(
                    "model %s: %s unavailable, ONNX Runtime runs on %s", name, provider, runner.provider
                )
            fallback = choose_variant(manifest, wanted, device_of(runner.provider), setting)
            if fallback != variant:
                # onnxruntime-gpu fell back to CPU: serve (and report) the CPU choice, not fp16 on CPU.
                variant = fallback
                runner = OnnxRunner(
                    directory / manifest.variants[variant].file, [CPU], s.threads(), s.ort_spin
                )
        except (store.StoreError, RunnerError, OSError, ValueError) as exc:
            raise ReloadFailed(f"model {name!r} v{version}: {exc}") from exc
        on_gpu = runner.provider == CUDA
        engine = Engine(
            name=name,
            version=version,
            variant=variant,
            runner=runner,
            codec=make_codec(manifest, tokenizer, s),
            metrics=self.metrics,
            policy=BatchPolicy(
                max_batch_size=s.max_batch_size,
                max_batch_tokens=s.max_batch_tokens,
                overhead_tokens=s.effective_overhead_tokens(on_gpu),
                wait_ms=s.effective_batch_wait_ms(on_gpu),
                max_queue=s.max_queue,
                retry_after_s=s.retry_after_s,
                debug_delay_ms=s.debug_runner_delay_ms,
                inline_chars=s.tokenize_inline_chars,
                runner_threads=s.effective_runner_threads(on_gpu),
            ),
            tokenize_pool=self._pool,
            device_lock=None if on_gpu else self._device_lock,
            pad_id=tokenizer.pad_id,
        )
        filler = tokenizer.encode(["the quick brown fox jumps over the lazy dog"])[0].ids
        lengths = warmup_lengths(manifest.max_seq_len) if s.warmup else [min(16, manifest.max_seq_len)]
        try:
            width = engine.warmup(lengths, filler)
        except RunnerError as exc:
            raise ReloadFailed(f"model {name!r} v{version}: the ONNX graph does not run: {exc}") from exc
        if width != len(manifest.labels):
            raise ReloadFailed(
                f"model {name!r} v{version}: the graph outputs {width} logits but the manifest lists "
                f"{len(manifest.labels)} labels"
            )
        engine.start()
        return Served(name, version, variant, runner.provider, manifest), engine

    def _publish(self, served: Served) -> None:
        old = self._served.get(served.name)
        if old is not None:
            self.metrics.model_info.remove(old.name, str(old.version), old.variant, old.provider)
        self._served[served.name] = served
        self.metrics.model_info.labels(served.name, str(served.version), served.variant, served.provider).set(
            1
        )

    async def load_all(self) -> None:
        """Start-up: load every target model, then mark ready. Models load concurrently: hashing and
        session creation release the GIL, so one model's I/O overlaps another's warm-up."""
        names = self.target_names()
        missing = sorted(set(self.settings.models) - set(names))
        if missing:
            raise ReloadFailed(f"models {missing} are not in the store {self.settings.store}")
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(asyncio.to_thread(self._load, name, None) for name in names), return_exceptions=True
        )
        for name, outcome in zip(names, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                self.metrics.reloads.labels(name, "failed").inc()
                continue
            served, engine = outcome
            self._engines[name] = engine
            self._publish(served)
            self.metrics.reloads.labels(name, "ok").inc()
            log.info("loaded %s v%d (%s on %s)", name, served.version, served.variant, served.provider)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        log.info("loaded %d models in %.2f s", len(names), time.perf_counter() - started)
        self.ready = True

    async def reload(self, name: str, version: int | None = None) -> tuple[Served | None, Served]:
        """Load ``name`` (its pin or newest version, or ``version``) beside the serving one and swap.

        Returns (previous, current). Raises ReloadFailed and keeps the old version on any failure."""
        if name not in self.target_names() and name not in self._served:
            raise ModelNotFound(f"no model named {name!r} in the store {self.settings.store}")
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            previous = self._served.get(name)
            try:
                served, engine = await asyncio.to_thread(self._load, name, version)
            except ReloadFailed as exc:
                self.metrics.reloads.labels(name, "failed").inc()
                log.error("reload of %s refused, still serving the old version: %s", name, exc)
                raise
            old_engine = self._engines.get(name)
            self._engines[name] = engine
            self._publish(served)
            self.metrics.reloads.labels(name, "ok").inc()
            log.info("reloaded %s: v%s -> v%d", name, previous.version if previous else None, served.version)
        if old_engine is not None:
            task = asyncio.get_running_loop().create_task(old_engine.stop(self.settings.shutdown_grace_s))
            self._retiring.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._retiring.discard)
        return previous, served

    async def poll(self) -> None:
        """Load models that appeared in the store since start-up (a build job that finishes after the
        API started), and reload those whose newest version is newer than the served one. A pinned
        model stays on its pin once served."""
        interval = self.settings.poll_interval_s
        while True:
            await asyncio.sleep(interval)
            for name in sorted(set(self.target_names()) | set(self._served)):
                served = self._served.get(name)
                available = store.versions(self.settings.store, name)
                wanted = self.settings.pins.get(name) or (available[-1] if available else None)
                if wanted is None or wanted not in available:
                    continue  # nothing there yet, or not the pinned version
                if (served is None or wanted > served.version) and self._refused.get(name) != wanted:
                    try:
                        await self.reload(name, wanted)
                    except ReloadFailed:
                        # Versions are immutable: one refusal is final until a newer version appears.
                        self._refused[name] = wanted

    async def close(self, grace_s: float) -> None:
        engines = list(self._engines.values())
        self.ready = False
        await asyncio.gather(*(e.stop(grace_s) for e in engines), *self._retiring)
