"""The route table. Handlers stay thin: validation is the schemas', the work is ``serving``'s."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic_core import to_json
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
from slimserve.service.api.serving import run_inference
from slimserve.service.errors import NotReady
from slimserve.service.registry import Served
from slimserve.service.tasks.classification import ClassifyParams, Prediction
from slimserve.service.tasks.token_classification import NerParams, NerResult

SEQUENCE = "sequence-classification"
TOKEN = "token-classification"


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "A text exceeds the model's window and `truncate` is false (`input_too_long`).",
        401: "API keys are configured and the bearer token is missing or wrong (`unauthorized`).",
        404: "Unknown model, or a model of another task (`model_not_found`).",
        409: "The new version was refused; the old one keeps serving (`reload_failed`).",
        413: "Too many inputs, a text too long, or a body over the byte limit (`payload_too_large`).",
        422: "Malformed JSON, wrong types, an empty list or an unknown field (`validation_error`).",
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

inference = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])
probes = APIRouter()


def classification_results(results: list[Prediction]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in results:
        item: dict[str, Any] = {"label": p.label, "score": p.score}
        if p.top is not None:
            item["top"] = [{"label": t.label, "score": t.score} for t in p.top]
        out.append(item)
    return out


def ner_results(results: list[NerResult]) -> list[dict[str, Any]]:
    return [{"entities": [asdict(e) for e in r.entities]} for r in results]


def answer(served: Served, results: list[dict[str, Any]], headers: Mapping[str, str]) -> Response:
    """The inference response, serialized once, in Rust. The dicts have the ``response_model``'s exact
    shape (the OpenAPI schema still comes from it); returning a Response skips FastAPI's validate-
    then-serialize round trip through pydantic models, a large share of the event loop's time per
    request. tests/service compare these bodies with the schemas."""
    body = {"model": served.name, "version": served.version, "variant": served.variant, "results": results}
    return Response(to_json(body), media_type="application/json", headers=headers)


async def _classify(
    body: schemas.ClassifyRequest,
    default: str,
    request: Request,
    response: Response,
    registry: RegistryDep,
    settings: SettingsDep,
) -> Response:
    params = ClassifyParams(top_k=body.top_k, truncate=body.truncate)
    served, result = await run_inference(
        request, response, registry, settings, model=body.model or default, task=SEQUENCE,
        texts=body.texts(), params=params,
    )  # fmt: skip
    return answer(served, classification_results(result.results), response.headers)


@inference.post(
    "/sentiment",
    summary="Sentiment of one or more texts",
    description="Classifies with the `sentiment` model unless `model` names another sequence-classification "
    "model. `results` is aligned with `inputs`.",
    response_model=schemas.ClassifyResponse,
    response_model_exclude_none=True,
    responses={200: {"headers": TIMING_HEADERS}, **INFERENCE_ERRORS},
    tags=["inference"],
)
async def sentiment(
    body: schemas.ClassifyRequest,
    request: Request,
    response: Response,
    registry: RegistryDep,
    settings: SettingsDep,
) -> Response:
    return await _classify(body, "sentiment", request, response, registry, settings)


@inference.post(
    "/classify",
    summary="Classify texts with any sequence-classification model",
    description="Uses the `intent` model unless `model` names another. With `top_k` > 1 each result "
    "lists the best `top_k` labels in `top`.",
    response_model=schemas.ClassifyResponse,
    response_model_exclude_none=True,
    responses={200: {"headers": TIMING_HEADERS}, **INFERENCE_ERRORS},
    tags=["inference"],
)
async def classify(
    body: schemas.ClassifyRequest,
    request: Request,
    response: Response,
    registry: RegistryDep,
    settings: SettingsDep,
) -> Response:
    return await _classify(body, "intent", request, response, registry, settings)


@inference.post(
    "/ner",
    summary="Named entities in texts",
    description="Entities with character offsets into each input as sent (`input[start:end] == text`). "
    "Texts longer than the model's window are covered whole by overlapping windows.",
    response_model=schemas.NerResponse,
    responses={200: {"headers": TIMING_HEADERS}, **INFERENCE_ERRORS},
    tags=["inference"],
)
async def ner(
    body: schemas.NerRequest,
    request: Request,
    response: Response,
    registry: RegistryDep,
    settings: SettingsDep,
) -> Response:
    served, result = await run_inference(
        request, response, registry, settings, model=body.model or "ner", task=TOKEN,
        texts=body.texts(), params=NerParams(body.aggregation),
    )  # fmt: skip
    return answer(served, ner_results(result.results), response.headers)


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
