"""The FastAPI routes. The inference endpoints are made from the endpoint table (``endpoints.py``) and
answered by ``endpoints.answer``, as the fast path answers them; the others are written out here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from slimserve.service import store
from slimserve.service.api import schemas
from slimserve.service.api.deps import (
    MetricsDep,
    RegistryDep,
    SettingsDep,
    require_admin_key,
    require_key,
    require_key_for_metrics,
)
from slimserve.service.api.endpoints import ENDPOINTS, Endpoint, answer
from slimserve.service.errors import NotReady
from slimserve.service.registry import Served


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "A text exceeds the model's window and `truncate` is false (`input_too_long`).",
        401: "API keys are configured and the bearer token is missing or wrong (`unauthorized`).",
        404: "Unknown model, or a model of another task (`model_not_found`).",
        409: "The new version was refused; the old one keeps serving (`reload_failed`).",
        413: "Too many inputs, more model work (tokens) than one request may ask for, or a body over the "
        "byte limit (`payload_too_large`).",
        422: "Malformed JSON (invalid UTF-8, a lone surrogate escape, nesting too deep), a body that is not "
        "JSON, wrong types, an empty list or an unknown field (`validation_error`).",
        503: "The queue is full (`overloaded`, with Retry-After) or models are loading (`not_ready`).",
        504: "The request waited longer than its deadline (`timeout`).",
    }
    return {c: {"model": schemas.ErrorResponse, "description": text[c]} for c in codes}


INFERENCE_ERRORS = _errors(400, 401, 404, 413, 422, 503, 504)
TIMING_HEADERS = {
    name: {"description": desc, "schema": {"type": "string"}}
    for name, desc in {
        "x-request-id": "The client's id, echoed, or a new one.",
        "x-queue-time": "Milliseconds the request's rows waited for a batch.",
        "x-inference-time": "Milliseconds ONNX Runtime spent on the batches that carried them.",
        "x-total-time": "Milliseconds from receiving the request to answering it.",
    }.items()
}

# The inference endpoints check the API key themselves (``endpoints.answer``), as the fast path does.
endpoints = APIRouter()
inference = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])
probes = APIRouter()


def _handler(endpoint: Endpoint) -> Callable[..., Awaitable[Response]]:
    async def handle(request: Request, registry: RegistryDep, settings: SettingsDep) -> Response:
        request.scope["route"] = endpoint
        return await answer(endpoint, request, await request.body(), registry, settings)

    return handle


def add_endpoint(router: APIRouter, endpoint: Endpoint) -> None:
    """One route for one endpoint of the table. Its request body is documented from the request model
    (``openapi.py`` adds the schema) but parsed by ``answer``, from the raw bytes, as on the fast path."""
    router.add_api_route(
        endpoint.path,
        _handler(endpoint),
        methods=["POST"],
        name=endpoint.path.strip("/").replace("/", "_"),
        summary=endpoint.summary,
        description=endpoint.description,
        response_model=endpoint.response,
        response_model_exclude_none=True,
        responses={200: {"headers": TIMING_HEADERS}, **INFERENCE_ERRORS},
        tags=["inference"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{endpoint.request.__name__}"}
                    }
                },
            }
        },
    )


for _endpoint in ENDPOINTS:
    add_endpoint(endpoints, _endpoint)


@inference.get(
    "/models",
    summary="What is served",
    response_model=schemas.ModelsResponse,
    responses=_errors(401),
    tags=["models"],
)
async def models(registry: RegistryDep) -> schemas.ModelsResponse:
    return schemas.ModelsResponse(
        models=[_model_info(s) for s in registry.served()],
        refused=[
            schemas.RefusedVersion(name=r.name, version=r.version, reason=r.reason, retrying=r.transient)
            for r in registry.refused()
        ],
    )


def _model_info(s: Served) -> schemas.ModelInfo:
    variant = s.manifest.variants[s.variant]
    arch = variant.architecture
    return schemas.ModelInfo(
        name=s.name,
        task=s.manifest.task,
        version=s.version,
        variant=s.variant,
        precision=store.precision_of(s.variant, variant),
        form=variant.form,
        architecture=schemas.Architecture.model_validate(arch.model_dump()) if arch else None,
        recommended=dict(s.manifest.recommended),
        provider=s.provider,
        labels=list(s.manifest.labels),
        max_seq_len=s.manifest.max_seq_len,
        metrics=dict(variant.metrics),
    )


@inference.post(
    "/models/{name}/reload",
    summary="Load a model's newest version without downtime",
    description="Loads the newest (or pinned) version beside the serving one, checks its sha256s, warms it "
    "up, then swaps; requests in flight finish on the old version. A version that fails is refused with "
    "409 and the old one keeps serving.",
    response_model=schemas.ReloadResponse,
    responses=_errors(401, 404, 409),
    dependencies=[Depends(require_admin_key)],
    tags=["models"],
)
async def reload(name: str, request: Request, registry: RegistryDep) -> schemas.ReloadResponse:
    if not registry.ready:
        raise NotReady("models are still loading")
    previous, current = await registry.reload(name)
    request.state.model = current.name
    return schemas.ReloadResponse(
        model=current.name,
        version=current.version,
        variant=current.variant,
        provider=current.provider,
        previous_version=previous.version if previous else None,
    )


@probes.get(
    "/healthz",
    summary="Liveness: 200 while the process lives",
    response_model=schemas.Status,
    tags=["probes"],
)
async def healthz() -> schemas.Status:
    return schemas.Status(status="ok")


@probes.get(
    "/readyz",
    summary="Readiness: 200 once every model is loaded and warmed",
    response_model=schemas.Status,
    responses=_errors(503),
    tags=["probes"],
)
async def readyz(registry: RegistryDep) -> JSONResponse:
    # Answered from flags: never touches a queue or the disk, so it stays fast under any load.
    problem = registry.readiness()
    if problem is not None:
        raise NotReady(problem)
    return JSONResponse({"status": "ready"})


@probes.get(
    "/metrics",
    summary="Prometheus metrics (text format)",
    response_class=PlainTextResponse,
    dependencies=[Depends(require_key_for_metrics)],
    responses=_errors(401),
    tags=["probes"],
)
async def metrics(m: MetricsDep) -> Response:
    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)
