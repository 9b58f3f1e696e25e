"""The inference endpoints, each described once: its path, task, default model, request type, how a
request becomes the codec's parameters, and how results become the response body.

The FastAPI routes (``routes.py``), the fast path (``fastpath.py``) and the OpenAPI description are
all made from :data:`ENDPOINTS`, and every request to one of them is answered by :func:`answer`,
whichever way it came in. A new surface adds rows here (or a table of its own shaped the same way).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json
from slimserve.service.api import schemas
from slimserve.service.api.deps import check_key
from slimserve.service.api.serving import run_inference
from slimserve.service.engine.batcher import EngineResult
from slimserve.service.errors import InvalidRequest, describe_validation
from slimserve.service.registry import Registry, Served
from slimserve.service.settings import Settings
from slimserve.service.store import SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, Task
from slimserve.service.tasks.classification import ClassifyParams, Prediction
from slimserve.service.tasks.token_classification import NerParams, NerResult


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str
    """The route template; also the ``endpoint`` label of the request metrics."""
    task: Task
    default_model: str
    request: type[schemas.InferenceRequest]
    response: type[BaseModel]
    params: Callable[[Any], Any]
    """The validated request -> the codec's parameters."""
    encode: Callable[[list[Any]], list[dict[str, Any]]]
    """The codec's results -> the response's ``results``, in the response model's exact shape."""
    summary: str
    description: str


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


def _classify_params(request: schemas.ClassifyRequest) -> ClassifyParams:
    return ClassifyParams(top_k=request.top_k, truncate=request.truncate)


def _ner_params(request: schemas.NerRequest) -> NerParams:
    return NerParams(request.aggregation)


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        path="/v1/sentiment",
        task=SEQUENCE_CLASSIFICATION,
        default_model="sentiment",
        request=schemas.ClassifyRequest,
        response=schemas.ClassifyResponse,
        params=_classify_params,
        encode=classification_results,
        summary="Sentiment of one or more texts",
        description="Classifies with the `sentiment` model unless `model` names another "
        "sequence-classification model. `results` is aligned with `inputs`.",
    ),
    Endpoint(
        path="/v1/classify",
        task=SEQUENCE_CLASSIFICATION,
        default_model="intent",
        request=schemas.ClassifyRequest,
        response=schemas.ClassifyResponse,
        params=_classify_params,
        encode=classification_results,
        summary="Classify texts with any sequence-classification model",
        description="Uses the `intent` model unless `model` names another. With `top_k` > 1 each result "
        "lists the best `top_k` labels in `top`.",
    ),
    Endpoint(
        path="/v1/ner",
        task=TOKEN_CLASSIFICATION,
        default_model="ner",
        request=schemas.NerRequest,
        response=schemas.NerResponse,
        params=_ner_params,
        encode=ner_results,
        summary="Named entities in texts",
        description="Entities with character offsets into each input as sent (`input[start:end] == text`). "
        "Texts longer than the model's window are covered whole by overlapping windows.",
    ),
)
BY_PATH: Mapping[str, Endpoint] = {e.path: e for e in ENDPOINTS}


def is_json(content_type: str | None) -> bool:
    """JSON bodies: no content type (FastAPI reads those as JSON), application/json, application/*+json."""
    if content_type is None:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def parse(model: type[schemas.InferenceRequest], content_type: str | None, body: bytes) -> Any:
    """The validated request, from the raw bytes (pydantic's Rust JSON parser: strict UTF-8, no lone
    surrogates, nesting limited), or :class:`InvalidRequest` (422 validation_error) saying why."""
    if not is_json(content_type):
        raise InvalidRequest(f"the body must be JSON sent as application/json, not {content_type!r}")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidRequest(describe_validation(exc.errors(include_url=False))) from None


def respond(served: Served, results: list[dict[str, Any]], headers: Mapping[str, str]) -> Response:
    """The inference response, serialized once, in Rust. The dicts have the response model's exact
    shape (the OpenAPI schema still comes from it); skipping pydantic's validate-then-serialize round
    trip saves a large share of the event loop's time per request. tests/service compare these bodies
    with the schemas."""
    body = {"model": served.name, "version": served.version, "variant": served.variant, "results": results}
    return Response(to_json(body), media_type="application/json", headers=headers)


async def answer(
    endpoint: Endpoint, request: Request, body: bytes, registry: Registry, settings: Settings
) -> Response:
    """One inference request, from raw body to response; raises ServiceErrors (``errors.py`` turns
    them into the contract's envelope). The only path, fast or through FastAPI."""
    check_key(settings, request.headers.get("authorization"))
    parsed = parse(endpoint.request, request.headers.get("content-type"), body)
    served, result = await run_inference(
        request, registry, settings, model=parsed.model or endpoint.default_model, task=endpoint.task,
        texts=parsed.texts(), params=endpoint.params(parsed),
    )  # fmt: skip
    return respond(served, endpoint.encode(result.results), timing_headers(result))


def timing_headers(result: EngineResult) -> dict[str, str]:
    return {
        "x-queue-time": f"{result.queue_s * 1000:.2f}",
        "x-inference-time": f"{result.inference_s * 1000:.2f}",
    }
