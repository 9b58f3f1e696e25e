"""The inference endpoints without FastAPI's per-request machinery.

A POST to an endpoint of the table (``endpoints.py``) is answered here, from the pure ASGI middleware,
by the very function the FastAPI routes call (``endpoints.answer``): same parsing, limits, errors and
bodies. What it skips is routing and dependency solving, about a third of the event loop's time per
request, and the event loop shares the CPU with ONNX Runtime. The FastAPI routes remain the OpenAPI
description of these endpoints and answer them when the fast path is off (``fast_path: false``).
"""

from __future__ import annotations

from slimserve.service.api.endpoints import BY_PATH, Endpoint, answer
from slimserve.service.errors import error_response
from slimserve.service.registry import Registry
from slimserve.service.settings import Settings
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class FastPath:
    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    def match(self, scope: Scope) -> Endpoint | None:
        if scope["method"] != "POST":
            return None
        return BY_PATH.get(scope["path"])

    async def handle(
        self, endpoint: Endpoint, body: bytes, scope: Scope, receive: Receive, send: Send
    ) -> None:
        scope["route"] = endpoint  # the request metrics label it with the route template
        response: Response
        try:
            response = await answer(endpoint, Request(scope, receive), body, self.registry, self.settings)
        except Exception as exc:  # every error, expected or not, becomes the contract's envelope
            response = error_response(exc)
        await response(scope, receive, send)
