"""What an inference request does between validation and response: the input-count limit, model
lookup, deadline, client-disconnect watch and the engine call. It returns what was served and the
engine's result (with its timings); the HTTP shape of both is ``endpoints.py``'s."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from slimserve.service import tracing
from slimserve.service.engine.batcher import EngineResult
from slimserve.service.errors import ClientClosed, InvalidRequest, ModelNotFound, NotReady, PayloadTooLarge
from slimserve.service.registry import Registry, Served
from slimserve.service.settings import Settings
from slimserve.service.store import Task
from starlette.requests import Request

DEADLINE_HEADER = "x-deadline-ms"


def served_model(registry: Registry, name: str, version: str | None = None) -> Served:
    """The model ``name`` (at ``version`` when given) whatever its task: 503 while loading, else 404."""
    if not registry.ready:
        raise NotReady("models are still loading; retry when /readyz answers 200")
    for served in registry.served():
        if served.name == name:
            if version is not None and version != str(served.version):
                raise ModelNotFound(
                    f"model {name!r} version {version} is not served (serving {served.version})"
                )
            return served
    known = ", ".join(s.name for s in registry.served()) or "none"
    raise ModelNotFound(f"no model named {name!r} is served (served: {known})")


def check_limits(texts: list[str], settings: Settings) -> None:
    """The input count. Text length is not limited here: the body limit bounds the bytes, the engine
    bounds the model work in tokens, and classification truncates to the window by default."""
    if len(texts) > settings.max_inputs:
        raise PayloadTooLarge(f"{len(texts)} inputs in one request; the limit is {settings.max_inputs}")


def deadline_for(request: Request, settings: Settings, started: float) -> float:
    """A monotonic instant: the setting, or less when the client asks with x-deadline-ms."""
    budget_ms = settings.deadline_ms
    raw = request.headers.get(DEADLINE_HEADER)
    if raw is not None:
        try:
            asked = float(raw)
        except ValueError:
            asked = -1.0
        if not asked > 0:
            raise InvalidRequest(f"{DEADLINE_HEADER} must be a positive number of milliseconds, got {raw!r}")
        budget_ms = min(budget_ms, asked)
    return started + budget_ms / 1000


async def _watch_disconnect(request: Request) -> None:
    """Returns once the client has gone (the body was already read by the middleware)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def run_inference(
    request: Request,
    registry: Registry,
    settings: Settings,
    *,
    model: str,
    task: Task,
    texts: list[str],
    params: Any,
) -> tuple[Served, EngineResult]:
    # From the request's arrival (the middleware), not from here: a slow body or a saturated event
    # loop must not stretch the deadline past what the client asked for.
    started = getattr(request.state, "received_at", None) or time.monotonic()
    if not registry.ready:
        raise NotReady("models are still loading; retry when /readyz answers 200")
    check_limits(texts, settings)
    deadline = deadline_for(request, settings, started)
    served = registry.get(model, task)
    request.state.model = served.name  # a metric label from the store, never from request text
    work = asyncio.ensure_future(registry.infer(served.name, task, texts, params, deadline))
    watch = asyncio.ensure_future(_watch_disconnect(request))
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not work.done():
            # The client left (or this task was cancelled): the engine drops the queued rows.
            work.cancel()
        await asyncio.wait({work, watch})
    if work.cancelled():
        raise ClientClosed("the client closed the connection before the answer was ready")
    served, result = work.result()
    traced = tracing.ACTIVE.get()
    if traced is not None:
        traced.record(served, result)
    return served, result
