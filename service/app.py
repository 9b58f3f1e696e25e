"""The application factory. Nothing is created at import time: ``create_app(settings)`` builds the
app, and its lifespan loads the store in the background (so /healthz answers at once and /readyz turns
200 when every model is warm), polls the store when asked, and drains every engine on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import uvicorn
from fastapi import FastAPI
from slimserve.service import tracing
from slimserve.service.api import openapi
from slimserve.service.api.fastpath import FastPath
from slimserve.service.api.hf import routes as hf
from slimserve.service.api.middleware import RequestContext
from slimserve.service.api.routes import endpoints, inference, probes
from slimserve.service.api.v2 import routes as v2
from slimserve.service.errors import ServiceError, install_handlers
from slimserve.service.metrics import Metrics
from slimserve.service.registry import Registry
from slimserve.service.settings import Settings

log = logging.getLogger("slimserve.service")

DESCRIPTION = """
Compressed NLP models (sentiment, intent classification, NER) on ONNX Runtime, with token-budget
batching, per-request deadlines, backpressure and zero-downtime reloads.

Errors are JSON `{"error": {"type": "...", "message": "..."}}` (on `/v2`: `{"error": "..."}`; on `/hf`:
`{"error": "...", "error_type": "..."}`, same status codes); every response carries `x-request-id`,
inference responses also `x-queue-time`, `x-inference-time`, `x-total-time` (milliseconds).
Send `x-deadline-ms` to ask for a shorter deadline than the server's.
"""


# How long a connection accepted before SIGTERM may take to send its request before it is closed.
ACCEPTED_WAIT_S = 1.0


class DrainingServer(uvicorn.Server):
    """uvicorn's server, but readiness turns 503 the moment SIGTERM or SIGINT arrives rather than once
    uvicorn has drained: load balancers stop routing here while the requests in flight finish."""

    def __init__(self, config: uvicorn.Config, registry: Registry) -> None:
        super().__init__(config)
        self.registry = registry

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.registry.start_draining()
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's drain, less two ways of dropping requests a client has already sent, both seen
        under CPU load (bench/chaos.py, SIGTERM): connections waiting in the kernel's accept queue are
        reset when the listener closes, so the loop gets a few turns to accept them first; and uvicorn
        closes every connection on which no request has started, so those accepted just before the
        signal get up to ``ACCEPTED_WAIT_S`` (never more than the grace) for their request to arrive."""
        for _ in range(3):
            await asyncio.sleep(0)  # each turn runs the accept callbacks of a ready listener
        for server in self.servers:
            server.close()
        grace = self.config.timeout_graceful_shutdown
        wait = ACCEPTED_WAIT_S if grace is None else min(ACCEPTED_WAIT_S, grace)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(
            getattr(c, "cycle", False) is None for c in self.server_state.connections
        ):
            await asyncio.sleep(0.01)
        await super().shutdown(sockets)


def _log_end(task: asyncio.Task[None]) -> None:
    """A background task must never end silently: say how it ended unless it was cancelled."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task %s died: %r", task.get_name(), exc, exc_info=exc)
    elif task.get_name() == "store-poll":
        log.error("background task %s ended; the store is no longer polled", task.get_name())


def create_app(
    settings: Settings, on_fatal: Callable[[str], None] | None = None, span_exporter: Any = None
) -> FastAPI:
    """``on_fatal`` is called when start-up loading fails (the CLI stops the server and exits 1).
    ``span_exporter`` replaces the OTLP exporter when tracing is on (tests pass an in-memory one)."""
    # Tokenization runs on its own worker; rayon threads inside `tokenizers` would compete with ORT.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    metrics = Metrics()
    pool = ThreadPoolExecutor(settings.tokenizer_threads, thread_name_prefix="tokenize")
    # On CPU at most runner_threads ONNX Runtime calls run at once across all models, each with
    # cores / runner_threads threads: several sessions each using every core would thrash.
    slots = threading.BoundedSemaphore(settings.effective_runner_threads())
    registry = Registry(settings, metrics, pool, slots)
    traces = tracing.setup(settings, span_exporter)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []

        async def load() -> None:
            try:
                await registry.load_all()
            except Exception as exc:
                message = exc.message if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
                registry.loading_error = message
                log.error("start-up failed: %s", message)
                if on_fatal is not None:
                    on_fatal(message)
                return
            served = [s.name for s in registry.served()]
            if served:
                log.info("ready: serving %s", ", ".join(served))
            else:
                # Ready with nothing to serve is legal (models can arrive by reload or polling), but
                # every model request will 404 until then: say so where operators look first.
                log.warning("ready, but the store %s holds no model: requests answer 404", settings.store)
            if settings.poll_interval_s > 0 and not registry.draining:
                poll = asyncio.create_task(registry.poll(), name="store-poll")
                poll.add_done_callback(_log_end)
                tasks.append(poll)

        loading = asyncio.create_task(load(), name="store-load")
        loading.add_done_callback(_log_end)
        tasks.append(loading)
        try:
            yield
        finally:
            registry.start_draining()  # a start-up still finishing starts no poll now
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await registry.close(settings.shutdown_grace_s)
            pool.shutdown(wait=False, cancel_futures=True)
            if traces is not None:
                traces.shutdown()  # flushes the spans not yet exported

    app = FastAPI(
        title="slimserve",
        description=DESCRIPTION,
        version="0.1.0",
        lifespan=lifespan,
        openapi_tags=[
            {"name": "inference", "description": "Run a model on texts."},
            {"name": "models", "description": "What is served, and reloading it."},
            {"name": "probes", "description": "Liveness, readiness and metrics (never queued)."},
            {
                "name": "v2",
                "description": "Open Inference Protocol v2 (KServe / Triton REST) on the same models; errors "
                'are `{"error": "..."}` here.',
            },
            {
                "name": "hugging face",
                "description": "Hugging Face task shapes and TEI's /predict and /info, one base URL per "
                'model (`InferenceClient(model=".../hf/models/NAME")`); errors are `{"error", "error_type"}` '
                "here.",
            },
        ],
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.registry = registry
    install_handlers(app)
    app.include_router(endpoints)
    app.include_router(inference)
    app.include_router(probes)
    app.include_router(v2.server)
    app.include_router(v2.models)
    app.include_router(hf.router)
    openapi.install(app, settings)
    app.add_middleware(
        RequestContext,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        fast=FastPath(registry, settings) if settings.fast_path else None,
        tracing=traces,
        body_timeout_s=settings.body_timeout_s,
    )
    return app
