"""The inference routes' common case without FastAPI's per-request machinery.

A well-formed JSON request to ``/v1/sentiment``, ``/v1/classify`` or ``/v1/ner`` is answered here,
from the pure ASGI middleware: the same request schemas (validated from the raw bytes, in Rust), the
same ``run_inference``, the same bodies and error envelopes as the FastAPI routes. Routing,
dependency solving and Python-side body validation cost the event loop about a third of its time per
request, and the event loop shares the CPU with ONNX Runtime. Anything else (another content type, a
body the schema refuses, a missing or wrong API key) falls through to the FastAPI routes, which
answer it as the contract says; they also remain the OpenAPI description of these endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError
from slimserve.service.api import schemas
from slimserve.service.api.deps import check_key
from slimserve.service.api.routes import SEQUENCE, TOKEN, answer, classification_results, ner_results
from slimserve.service.api.serving import run_inference
from slimserve.service.errors import ServiceError, Unauthorized, envelope
from slimserve.service.registry import Registry
from slimserve.service.settings import Settings
from slimserve.service.tasks.classification import ClassifyParams
from slimserve.service.tasks.token_classification import NerParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


@dataclass(frozen=True, slots=True)
class FastRoute:
    path: str
    """The route template, as the request metrics label it."""
    task: str
    default_model: str


ROUTES = {
    "/v1/sentiment": FastRoute("/v1/sentiment", SEQUENCE, "sentiment"),
    "/v1/classify": FastRoute("/v1/classify", SEQUENCE, "intent"),
    "/v1/ner": FastRoute("/v1/ner", TOKEN, "ner"),
}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class FastPath:
    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    def match(self, scope: Scope) -> FastRoute | None:
        if scope["method"] != "POST":
            return None
        return ROUTES.get(scope["path"])

    async def handle(self, route: FastRoute, body: bytes, scope: Scope, receive: Receive, send: Send) -> bool:
        """True once answered; False leaves the request to the FastAPI app (nothing was sent)."""
        content_type = _header(scope, b"content-type")
        if content_type is None or content_type.split(";")[0].strip().lower() != "application/json":
            return False
        if self.settings.api_keys:
            try:
                check_key(self.settings, _header(scope, b"authorization"))
            except Unauthorized:
                return False
        try:
            parsed: schemas.ClassifyRequest | schemas.NerRequest
            if route.task == SEQUENCE:
                parsed = schemas.ClassifyRequest.model_validate_json(body)
            else:
                parsed = schemas.NerRequest.model_validate_json(body)
        except ValidationError:
            return False
        scope["route"] = route
        request = Request(scope, receive)
        timing = Response()
        del timing.headers["content-length"]
        response: Response
        try:
            if isinstance(parsed, schemas.ClassifyRequest):
                served, result = await run_inference(
                    request, timing, self.registry, self.settings,
                    model=parsed.model or route.default_model, task=SEQUENCE, texts=parsed.texts(),
                    params=ClassifyParams(top_k=parsed.top_k, truncate=parsed.truncate),
                )  # fmt: skip
                response = answer(served, classification_results(result.results), timing.headers)
            else:
                served, result = await run_inference(
                    request, timing, self.registry, self.settings,
                    model=parsed.model or route.default_model, task=TOKEN, texts=parsed.texts(),
                    params=NerParams(parsed.aggregation),
                )  # fmt: skip
                response = answer(served, ner_results(result.results), timing.headers)
        except ServiceError as exc:
            response = envelope(exc.status, exc.type, exc.message, exc.headers())
        await response(scope, receive, send)
        return True
