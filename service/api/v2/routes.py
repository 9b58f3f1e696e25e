"""The v2 routes: thin; the work is ``serving``'s, the wire types are ``protocol``'s.

Health and server metadata are open, like ``/healthz``; model metadata, readiness and inference take
the API key when keys are configured, like ``/v1``. Errors on every ``/v2`` path are
``{"error": "..."}`` with ``/v1``'s status codes (``errors.ERROR_SHAPES``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from slimserve.service.api.deps import RegistryDep, SettingsDep, require_key
from slimserve.service.api.serving import served_model
from slimserve.service.api.v2 import protocol, serving
from slimserve.service.errors import NotReady

from slimserve import __version__

EXTENSIONS = ["binary_tensor_data", "classification"]
"""Triton's extensions this server speaks: raw tensors after the JSON, and top-k class strings."""

ERROR_TEXT = {
    400: "A text exceeds the model's window and `truncate` is false.",
    401: "API keys are configured and the bearer token is missing or wrong.",
    404: "Unknown model or version.",
    413: "Too many texts, a text too long, or a body over the byte limit.",
    422: "Malformed JSON or tensors: wrong input name, datatype or shape, bad parameters, unknown output.",
    503: "The queue is full (Retry-After) or models are still loading.",
    504: "The request waited longer than its deadline.",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": protocol.ErrorResponse, "description": ERROR_TEXT[c]} for c in codes}


server = APIRouter(prefix="/v2", tags=["v2"])
models = APIRouter(prefix="/v2/models", tags=["v2"], dependencies=[Depends(require_key)])

INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "An inference request: one BYTES input named `text`. With Triton's binary tensor "
        "data extension (what tritonclient and the kserve SDK send by default) the body is this JSON "
        "followed by the raw tensors (each BYTES element a 4-byte little-endian length, then its UTF-8 "
        "bytes), and the header `Inference-Header-Content-Length` gives the JSON's length.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}}},
    }
}
INFER_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The outputs. With binary outputs the body is the JSON followed by their raw bytes "
        "(`Inference-Header-Content-Length` gives the JSON's length).",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferResponse"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@server.get("", summary="Server metadata", response_model=protocol.ServerMetadata)
async def server_metadata() -> protocol.ServerMetadata:
    return protocol.ServerMetadata(name="slimserve", version=__version__, extensions=EXTENSIONS)


@server.get(
    "/health/live", summary="Liveness: 200 while the process lives", response_model=protocol.ServerLive
)
async def live() -> protocol.ServerLive:
    return protocol.ServerLive(live=True)


@server.get(
    "/health/ready",
    summary="Readiness: 200 once every model is loaded and warmed",
    response_model=protocol.ServerReady,
    responses=_errors(503),
)
async def ready(registry: RegistryDep) -> protocol.ServerReady:
    problem = registry.readiness()  # the same truth as /readyz: loading, unhealthy or shutting down
    if problem is not None:
        raise NotReady(problem)
    return protocol.ServerReady(ready=True)


def _metadata(registry: RegistryDep, name: str, version: str | None) -> protocol.ModelMetadata:
    return serving.metadata(served_model(registry, name, version))


@models.get(
    "/{name}",
    summary="Model metadata: tensor names, datatypes and shapes",
    response_model=protocol.ModelMetadata,
    responses=_errors(401, 404, 503),
)
async def model_metadata(name: str, registry: RegistryDep) -> protocol.ModelMetadata:
    return _metadata(registry, name, None)


@models.get(
    "/{name}/versions/{version}",
    summary="Model metadata of one version (the served one)",
    response_model=protocol.ModelMetadata,
    responses=_errors(401, 404, 503),
)
async def model_version_metadata(name: str, version: str, registry: RegistryDep) -> protocol.ModelMetadata:
    return _metadata(registry, name, version)


@models.get(
    "/{name}/config",
    summary="Triton's model configuration (what perf_analyzer reads)",
    response_model=protocol.ModelConfig,
    responses=_errors(401, 404, 503),
)
async def model_config(name: str, registry: RegistryDep) -> protocol.ModelConfig:
    return serving.config(served_model(registry, name, None))


@models.get(
    "/{name}/ready",
    summary="Model readiness: 200 when the model is served",
    response_model=protocol.ModelReady,
    responses=_errors(401, 404, 503),
)
async def model_ready(name: str, registry: RegistryDep) -> protocol.ModelReady:
    return protocol.ModelReady(name=served_model(registry, name, None).name, ready=True)


@models.get(
    "/{name}/versions/{version}/ready",
    summary="Model version readiness",
    response_model=protocol.ModelReady,
    responses=_errors(401, 404, 503),
)
async def model_version_ready(name: str, version: str, registry: RegistryDep) -> protocol.ModelReady:
    return protocol.ModelReady(name=served_model(registry, name, version).name, ready=True)


INFER_DESCRIPTION = (
    "One BYTES input `text` of shape `[n]`. Classification models answer `label` (BYTES) and `score` "
    "(FP32), shape `[n]`, or `[n, k]` with the parameter `top_k` = k; NER models answer `entities` "
    "(BYTES `[n]`), each a JSON array of `{entity, text, start, end, score}` (offsets into the input)."
)


@models.post(
    "/{name}/infer",
    summary="Inference (Open Inference Protocol v2)",
    description=INFER_DESCRIPTION,
    openapi_extra=INFER_BODY,
    responses={**INFER_OK, **_errors(400, 401, 404, 413, 422, 503, 504)},
)
async def infer(name: str, request: Request, registry: RegistryDep, settings: SettingsDep) -> Response:
    return await serving.infer(request, await request.body(), registry, settings, name, None)


@models.post(
    "/{name}/versions/{version}/infer",
    summary="Inference on one version (the served one)",
    description=INFER_DESCRIPTION,
    openapi_extra=INFER_BODY,
    responses={**INFER_OK, **_errors(400, 401, 404, 413, 422, 503, 504)},
)
async def infer_version(
    name: str, version: str, request: Request, registry: RegistryDep, settings: SettingsDep
) -> Response:
    return await serving.infer(request, await request.body(), registry, settings, name, version)


def document(spec: dict[str, Any]) -> None:
    """Add the wire types that the raw-body routes reference to the OpenAPI components."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in (protocol.InferRequest, protocol.InferResponse):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
