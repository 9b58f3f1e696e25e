"""The inference endpoints without FastAPI's per-request machinery.

A POST to an endpoint of the table (``endpoints.py``), or to an inference route of the other API
surfaces (``SURFACE_ROUTES``: ``/v2`` and ``/hf``, whose paths name the model), is answered here,
from the pure ASGI middleware, by the very function the FastAPI routes call (``endpoints.answer``,
or the surface's handler): same parsing, limits, errors and bodies. What it skips is routing and
dependency solving, about a third of the event loop's time per request, and the event loop shares
the CPU with ONNX Runtime. The FastAPI routes remain the OpenAPI description of these endpoints and
answer them when the fast path is off (``fast_path: false``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from slimserve.service.api.deps import check_key
from slimserve.service.api.endpoints import BY_PATH, Endpoint, answer
from slimserve.service.api.hf import serving as hf
from slimserve.service.api.v2 import serving as v2
from slimserve.service.errors import error_response
from slimserve.service.registry import Registry
from slimserve.service.settings import Settings
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

Handler = Callable[..., Awaitable[Response]]
"""``(request, body, registry, settings, **path_parameters) -> Response``, raising ServiceErrors."""


@dataclass(frozen=True, slots=True)
class SurfaceRoute:
    """An inference route of another API surface, whose path carries parameters (the model's name):
    the same handler its FastAPI route calls, answered here with the surface's error shape."""

    path: str
    """The route template, e.g. ``/v2/models/{name}/infer``; also the request metrics' label."""
    handler: Handler

    def match(self, path: str) -> dict[str, str] | None:
        template = self.path.split("/")
        parts = path.split("/")
        if len(parts) != len(template):
            return None
        found: dict[str, str] = {}
        for want, got in zip(template, parts, strict=True):
            if want.startswith("{"):
                if not got:
                    return None
                found[want[1:-1]] = got
            elif want != got:
                return None
        return found


SURFACE_ROUTES: tuple[SurfaceRoute, ...] = (
    SurfaceRoute("/v2/models/{name}/infer", v2.infer),
    SurfaceRoute("/v2/models/{name}/versions/{version}/infer", v2.infer),
    SurfaceRoute("/hf/models/{name}", hf.task),
    SurfaceRoute("/hf/models/{name}/predict", hf.predict),
)


class FastPath:
    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    def match(self, scope: Scope) -> Endpoint | tuple[SurfaceRoute, dict[str, str]] | None:
        if scope["method"] != "POST":
            return None
        path: str = scope["path"]
        endpoint = BY_PATH.get(path)
        if endpoint is not None or not path.startswith(("/v2/", "/hf/")):
            return endpoint
        for route in SURFACE_ROUTES:
            params = route.match(path)
            if params is not None:
                return route, params
        return None

    async def handle(
        self,
        endpoint: Endpoint | tuple[SurfaceRoute, dict[str, str]],
        body: bytes,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        request = Request(scope, receive)
        response: Response
        if isinstance(endpoint, Endpoint):
            scope["route"] = endpoint  # the request metrics label it with the route template
            try:
                response = await answer(endpoint, request, body, self.registry, self.settings)
            except Exception as exc:  # every error, expected or not, becomes the contract's envelope
                response = error_response(exc)
        else:
            route, params = endpoint
            scope["route"] = route
            try:
                check_key(self.settings, request.headers.get("authorization"))
                response = await route.handler(request, body, self.registry, self.settings, **params)
            except Exception as exc:  # the surface's error shape, chosen by the path
                response = error_response(exc, scope["path"])
        await response(scope, receive, send)
