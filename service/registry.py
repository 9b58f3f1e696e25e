"""The lifecycle of served models: start-up, reloads, store polling, refusals, shutdown.

Loading one version reads its manifest (``catalog``), picks the provider and the variant
(``provider_choice``, ``variants``), checks every sha256, opens the ONNX graph, checks the output
width against the labels, warms the engine up under the device slots and only then makes it
visible. Any failure, of any kind, becomes :class:`ReloadFailed` with the cause, is logged, counted in
``slimserve_model_reloads_total{outcome="failed"}`` and listed under ``refused`` in ``/v1/models``.

- Start-up serves each model's highest version that loads: a corrupt newest version is refused and
  the one below it served (a restart never crash-loops on it). A *pinned* model serves its pin or
  nothing: a pin is an explicit choice, so a pinned version that does not load fails start-up with
  a message naming the pin, instead of silently serving another version.
- A reload loads beside the serving engine and swaps on success; concurrent reloads of one model share
  one load. The old engine finishes what it has admitted within the shutdown grace and hands the
  rest to the new engine.
- Polling survives anything: a failed poll is logged and the next one runs. A version refused for
  its content is not tried again; one refused for an I/O error is retried with a growing delay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from slimserve.service import store
from slimserve.service.batch_policy import batch_policy, warmup_lengths
from slimserve.service.catalog import Catalog, describe, is_transient, read_version
from slimserve.service.engine.batcher import DeviceSlot, Engine, EngineResult, EngineRetired
from slimserve.service.engine.codec import Codec
from slimserve.service.engine.runner import CUDA, FaultyRunner
from slimserve.service.engine.tokenizer import TextTokenizer
from slimserve.service.errors import ModelNotFound, NotReady, ReloadFailed
from slimserve.service.metrics import Metrics
from slimserve.service.provider_choice import open_runner
from slimserve.service.settings import Settings
from slimserve.service.tasks.classification import ClassificationCodec

log = logging.getLogger(__name__)

RETRY_MAX_S = 600.0  # longest wait before polling tries a transiently refused version again


@dataclass(frozen=True, slots=True)
class Served:
    """What a loaded model reports (``/v1/models``, ``slimserve_model_info``)."""

    name: str
    version: int
    variant: str
    provider: str
    manifest: store.Manifest

    def info_labels(self) -> tuple[str, ...]:
        """``slimserve_model_info``'s label values, in ``MODEL_INFO_LABELS`` order."""
        variant = self.manifest.variants[self.variant]
        arch = variant.architecture
        return (
            self.name,
            str(self.version),
            self.variant,
            self.provider,
            variant.form,
            store.precision_of(self.variant, variant) or "",
            str(arch.layers) if arch else "",
            str(arch.parameters) if arch else "",
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """A version that did not load. ``transient``: an I/O error, tried again later."""

    name: str
    version: int
    reason: str
    transient: bool
    attempts: int
    retry_at: float  # time.monotonic() instant of the next try (transient only)


def make_codec(manifest: store.Manifest, tokenizer: TextTokenizer, settings: Settings) -> Codec[Any]:
    if manifest.task == store.SEQUENCE_CLASSIFICATION:
        return ClassificationCodec(tokenizer, list(manifest.labels))
    from slimserve.service.tasks.token_classification import NerCodec

    return NerCodec(tokenizer, list(manifest.labels), settings.ner_stride)


class Registry:
    def __init__(
        self, settings: Settings, metrics: Metrics, tokenize_pool: Executor, device_lock: DeviceSlot
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.catalog = Catalog(settings)
        self._pool = tokenize_pool
        self._device_lock = device_lock
        self._engines: dict[str, Engine] = {}
        self._served: dict[str, Served] = {}
        self._swap_locks: dict[str, asyncio.Lock] = {}
        self._reloads: dict[tuple[str, int | None], asyncio.Task[tuple[Served | None, Served]]] = {}
        self._refused: dict[tuple[str, int], Refusal] = {}
        self._retiring: set[asyncio.Task[None]] = set()  # old engines draining after a swap
        self.ready = False  # start-up done: requests are served (also while draining)
        self.draining = False  # SIGTERM received: /readyz answers 503 at once
        self.loading_error: str | None = None
        self.closed = False  # close() called: engines stopped, no more store scans

    # -- queries -----------------------------------------------------------------------------------

    def served(self) -> list[Served]:
        return [self._served[n] for n in sorted(self._served)]

    def refused(self) -> list[Refusal]:
        """Versions that did not load and are not served, newest first per model."""
        served = {(s.name, s.version) for s in self._served.values()}
        ordered = sorted(self._refused.items(), key=lambda kv: (kv[0][0], -kv[0][1]))
        return [r for k, r in ordered if k not in served]

    def readiness(self) -> str | None:
        """None when ready for traffic, else why not (the /readyz 503 message)."""
        if self.draining:
            return "shutting down: finishing the requests in flight"
        if not self.ready:
            return self.loading_error or "models are still loading"
        for name in sorted(self._engines):
            problem = self._engines[name].problem
            if problem is not None:
                return f"model {name!r} is unhealthy: {problem}"
        return None

    def get(self, name: str, task: str) -> Served:
        served = self._served.get(name)
        if served is None:
            known = ", ".join(sorted(self._served)) or "none"
            raise ModelNotFound(f"no model named {name!r} is served (served: {known})")
        if served.manifest.task != task:
            raise ModelNotFound(f"model {name!r} is a {served.manifest.task} model, not {task}")
        return served

    async def infer(
        self, name: str, task: str, texts: list[str], params: Any, deadline: float
    ) -> tuple[Served, EngineResult]:
        for _ in range(3):  # a reload can retire the engine between lookup and submit, or hand rows over
            served = self.get(name, task)
            engine = self._engines[name]
            try:
                return served, await engine.submit(texts, params, deadline)
            except EngineRetired:
                await asyncio.sleep(0)  # let a swap in progress publish the new engine
                continue
        raise NotReady(f"model {name!r} is being replaced or the server is shutting down; retry")

    # -- loading one version -------------------------------------------------------------------------

    def _load(self, name: str, version: int) -> tuple[Served, Engine]:
        """Blocking: a warmed, started engine for one version. Raises ReloadFailed only."""
        try:
            return self._open(name, version)
        except ReloadFailed as exc:
            if exc.message.startswith(f"model {name!r} v{version}"):
                raise
            raise ReloadFailed(f"model {name!r} v{version}: {exc.message}", exc.transient) from exc
        except Exception as exc:  # anything a bad file can raise (tokenizers raises plain Exception)
            raise ReloadFailed(f"model {name!r} v{version}: {describe(exc)}", is_transient(exc)) from exc

    def _open(self, name: str, version: int) -> tuple[Served, Engine]:
        s = self.settings
        directory, manifest = read_version(s.store, name, version)
        variant, runner = open_runner(directory, manifest, s)
        fault = s.debug_faults.get(name)
        if fault is not None:
            log.warning("model %s: fault %r injected (setting debug_faults): for testing only", name, fault)
            runner = FaultyRunner(runner, fault)
        tokenizer_path = store.inside(directory, manifest.tokenizer)
        try:
            tokenizer = TextTokenizer(tokenizer_path, manifest.max_seq_len)
        except Exception as exc:  # `tokenizers` raises a plain Exception for a malformed file
            raise ReloadFailed(f"{tokenizer_path}: cannot load the tokenizer ({describe(exc)})") from exc
        on_gpu = runner.provider == CUDA
        engine = Engine(
            name=name,
            version=version,
            variant=variant,
            runner=runner,
            codec=make_codec(manifest, tokenizer, s),
            metrics=self.metrics,
            policy=batch_policy(s, on_gpu),
            tokenize_pool=self._pool,
            device_lock=None if on_gpu else self._device_lock,
            pad_id=tokenizer.pad_id,
        )
        filler = tokenizer.encode(["the quick brown fox jumps over the lazy dog"])[0].ids
        try:
            width = engine.warmup(warmup_lengths(manifest.max_seq_len, s.warmup), filler)
        except Exception as exc:
            raise ReloadFailed(f"the ONNX graph does not run: {describe(exc)}") from exc
        if width != len(manifest.labels):
            raise ReloadFailed(
                f"the graph outputs {width} logits but the manifest lists {len(manifest.labels)} labels"
            )
        if isinstance(runner, FaultyRunner):
            runner.armed = True  # after warm-up: the version loads, then misbehaves
        engine.start()
        return Served(name, version, variant, runner.provider, manifest), engine

    def _refuse(self, name: str, version: int, exc: ReloadFailed) -> None:
        self.metrics.reloads.labels(name, "failed").inc()
        before = self._refused.get((name, version))
        attempts = (before.attempts if before else 0) + 1
        delay = min(RETRY_MAX_S, max(self.settings.poll_interval_s, 1.0) * 2 ** (attempts - 1))
        self._refused[(name, version)] = Refusal(
            name, version, exc.message, exc.transient, attempts, time.monotonic() + delay
        )
        if exc.transient:
            log.warning("model %s v%d refused for now (I/O error, tried again later): %s", name, version, exc)
        else:
            log.error("model %s v%d refused: %s", name, version, exc.message)

    def _due(self, name: str, version: int) -> bool:
        refusal = self._refused.get((name, version))
        return refusal is None or (refusal.transient and time.monotonic() >= refusal.retry_at)

    def _publish(self, served: Served, engine: Engine) -> None:
        old = self._served.get(served.name)
        if old is not None:
            self.metrics.model_info.remove(*old.info_labels())
        self._engines[served.name] = engine
        self._served[served.name] = served
        self._refused.pop((served.name, served.version), None)
        self.metrics.model_info.labels(*served.info_labels()).set(1)
        self.metrics.reloads.labels(served.name, "ok").inc()

    # -- start-up ------------------------------------------------------------------------------------

    async def _load_best(self, name: str) -> tuple[Served, Engine]:
        """The pinned version, or the highest version that loads."""
        available = await self.catalog.versions(name)
        pin = self.settings.pins.get(name)
        if pin is not None and pin not in available:
            raise ReloadFailed(
                f"model {name!r} is pinned to v{pin} (setting 'pins'), which is not in the store "
                f"{self.settings.store} (it has {available or 'no versions'})"
            )
        order = [pin] if pin is not None else sorted(available, reverse=True)
        reasons: list[str] = []
        for version in order:
            try:
                served, engine = await asyncio.to_thread(self._load, name, version)
            except ReloadFailed as exc:
                self._refuse(name, version, exc)
                reasons.append(exc.message)
                continue
            if version != order[0]:
                log.warning(
                    "model %s: serving v%d, the highest version that loads; refused: %s",
                    name, version, "; ".join(reasons),
                )  # fmt: skip
            return served, engine
        if pin is not None:
            raise ReloadFailed(
                f"model {name!r} is pinned to v{pin} (setting 'pins') and that version does not load: "
                f"{reasons[0]}. A pin is never swapped for another version silently: fix the version "
                "or change the pin"
            )
        raise ReloadFailed(f"model {name!r}: no version loads ({'; '.join(reasons) or 'none published'})")

    async def load_all(self) -> None:
        """Start-up: load every target model, then mark ready. Models load concurrently: hashing and
        session creation release the GIL, so one model's I/O overlaps another's warm-up."""
        names = await self.catalog.names()
        missing = sorted(set(self.settings.models) - set(names))
        if missing:
            raise ReloadFailed(f"models {missing} are not in the store {self.settings.store}")
        started = time.perf_counter()
        outcomes = await asyncio.gather(*(self._load_best(name) for name in names), return_exceptions=True)
        failures: list[BaseException] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                failures.append(outcome)
                continue
            served, engine = outcome
            self._publish(served, engine)
            log.info("loaded %s v%d (%s on %s)", served.name, served.version, served.variant, served.provider)
        if failures:
            await asyncio.gather(*(e.stop(0) for e in self._engines.values()))
            raise failures[0]
        log.info("loaded %d models in %.2f s", len(names), time.perf_counter() - started)
        self.ready = True

    # -- reloads -----------------------------------------------------------------------------------------

    async def reload(self, name: str, version: int | None = None) -> tuple[Served | None, Served]:
        """Load ``name`` (its pin or newest version, or ``version``) beside the serving one and swap.

        Returns (previous, current). Raises ReloadFailed and keeps the old version on any failure.
        Concurrent calls for the same model and version share one load."""
        key = (name, version)
        task = self._reloads.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._reload(name, version))
            self._reloads[key] = task

            def forget(done: asyncio.Task[tuple[Served | None, Served]]) -> None:
                if self._reloads.get(key) is done:
                    del self._reloads[key]
                if not done.cancelled():
                    done.exception()  # retrieved: every waiter may have gone

            task.add_done_callback(forget)
        return await asyncio.shield(task)

    async def _reload(self, name: str, version: int | None) -> tuple[Served | None, Served]:
        lock = self._swap_locks.setdefault(name, asyncio.Lock())
        async with lock:
            available = await self.catalog.versions(name)
            if not available and name not in self._served:
                raise ModelNotFound(f"no model named {name!r} in the store {self.settings.store}")
            if self.settings.models and name not in self.settings.models:
                raise ModelNotFound(f"model {name!r} is not served (setting 'models')")
            if version is None:
                version = self.settings.pins.get(name) or (available[-1] if available else None)
            if version is None or version not in available:
                where = self.settings.store
                raise ReloadFailed(f"model {name!r}: version {version} is not in the store {where}")
            previous = self._served.get(name)
            try:
                served, engine = await asyncio.to_thread(self._load, name, version)
            except ReloadFailed as exc:
                self._refuse(name, version, exc)
                if previous is not None:
                    log.error("reload of %s refused, still serving v%d", name, previous.version)
                raise
            old_engine = self._engines.get(name)
            self._publish(served, engine)
            log.info("reloaded %s: v%s -> v%d", name, previous.version if previous else None, served.version)
        if old_engine is not None:
            retire = asyncio.get_running_loop().create_task(old_engine.stop(self.settings.shutdown_grace_s))
            self._retiring.add(retire)  # the loop keeps only weak references to tasks
            retire.add_done_callback(self._retiring.discard)
        return previous, served

    # -- polling -------------------------------------------------------------------------------------

    async def poll(self) -> None:
        """Every ``poll_interval_s``: load models that appeared since start-up and newer versions of
        served ones (the highest that loads). Never ends on an error: each is logged."""
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            if self.closed:
                return  # shut down: the catalog's scan thread is gone
            try:
                await self.poll_once()
            except Exception:
                if self.closed:
                    return  # closed while this scan ran
                log.exception("polling the store failed; polling goes on")

    async def poll_once(self) -> None:
        try:
            names = set(await self.catalog.names()) | set(self._served)
        except ReloadFailed as exc:
            log.warning("polling: %s", exc.message)
            return
        for name in sorted(names):
            try:
                available = await self.catalog.versions(name)
            except ReloadFailed as exc:
                log.warning("polling: %s", exc.message)
                continue
            served = self._served.get(name)
            pin = self.settings.pins.get(name)
            if pin is not None:
                order = [pin] if pin in available and (served is None or served.version != pin) else []
            else:
                order = [v for v in sorted(available, reverse=True) if served is None or v > served.version]
            for version in order:
                if not self._due(name, version):
                    continue
                try:
                    await self.reload(name, version)
                except ReloadFailed:
                    continue  # logged, counted and recorded; try the next lower version
                break

    # -- shutdown ------------------------------------------------------------------------------------

    def start_draining(self) -> None:
        """SIGTERM: readiness turns 503 at once; requests already admitted or arriving keep being served."""
        if not self.draining:
            log.info("shutting down: /readyz now answers 503; finishing requests in flight")
        self.draining = True

    async def close(self, grace_s: float) -> None:
        self.draining = True
        self.closed = True
        engines = list(self._engines.values())
        await asyncio.gather(*(e.stop(grace_s) for e in engines), *self._retiring)
        self.catalog.close()
