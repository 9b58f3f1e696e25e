"""The Hugging Face routes: one base URL per model, ``/hf/models/{name}``, so that
``InferenceClient(model="http://HOST:PORT/hf/models/NAME")`` works unchanged. Thin: the work is
``serving``'s. API keys apply as on ``/v1``; errors are TEI's ``{"error": ..., "error_type": ...}``
with ``/v1``'s status codes (``errors.ERROR_SHAPES``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from slimserve.service.api.deps import RegistryDep, SettingsDep, require_key
from slimserve.service.api.hf import protocol, serving
from slimserve.service.api.serving import served_model

ERROR_TEXT = {
    400: "A text exceeds the window (`truncate` false on /predict), or an option this server does not "
    "offer (`function_to_apply` other than softmax).",
    401: "API keys are configured and the bearer token is missing or wrong.",
    404: "Unknown model, or /predict on a token-classification model.",
    413: "Too many texts, a text too long, or a body over the byte limit.",
    422: "Malformed JSON, wrong types, an empty list or an unknown field.",
    503: "The queue is full (Retry-After) or models are still loading.",
    504: "The request waited longer than its deadline.",
}
INFERENCE_ERRORS = (400, 401, 404, 413, 422, 503, 504)


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": protocol.ErrorResponse, "description": ERROR_TEXT[c]} for c in codes}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


TASK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "text-classification models take a TextClassificationRequest, token-classification "
        "models a TokenClassificationRequest (the Hugging Face task specs).",
        "content": {
            "application/json": {
                "schema": {"anyOf": [_ref("TextClassificationRequest"), _ref("TokenClassificationRequest")]}
            }
        },
    }
}
RANKED = {"type": "array", "items": _ref("ClassificationOutput")}
ENTITIES = {"type": "array", "items": _ref("TokenClassificationOutput")}
TASK_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "text-classification: one ranked list per input. token-classification: the entities "
        "of one text, or one list per text when `inputs` is a list.",
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {"type": "array", "items": RANKED},
                        ENTITIES,
                        {"type": "array", "items": ENTITIES},
                    ]
                }
            }
        },
    }
}
PREDICT_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("PredictRequest")}}}
}
PREDICT_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Every label, best first: a list for one text, one list per text for several.",
        "content": {"application/json": {"schema": {"anyOf": [RANKED, {"type": "array", "items": RANKED}]}}},
    }
}

router = APIRouter(prefix="/hf/models", tags=["hugging face"], dependencies=[Depends(require_key)])


@router.post(
    "/{name}",
    summary="The model's Hugging Face task (text or token classification)",
    openapi_extra=TASK_BODY,
    responses={**TASK_OK, **_errors(*INFERENCE_ERRORS)},
)
async def task(name: str, request: Request, registry: RegistryDep, settings: SettingsDep) -> Response:
    return await serving.task(request, await request.body(), registry, settings, name)


@router.post(
    "/{name}/predict",
    summary="TEI's /predict: every label's probability",
    openapi_extra=PREDICT_BODY,
    responses={**PREDICT_OK, **_errors(*INFERENCE_ERRORS)},
)
async def predict(name: str, request: Request, registry: RegistryDep, settings: SettingsDep) -> Response:
    return await serving.predict(request, await request.body(), registry, settings, name)


@router.get(
    "/{name}/info",
    summary="TEI's /info: the model and the server's limits",
    response_model=protocol.Info,
    responses=_errors(401, 404, 503),
)
async def info(name: str, registry: RegistryDep, settings: SettingsDep) -> protocol.Info:
    return serving.info(served_model(registry, name), settings)


def document(spec: dict[str, Any]) -> None:
    """Add the wire types that the raw-body routes reference to the OpenAPI components."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in (
        protocol.TextClassificationRequest,
        protocol.TokenClassificationRequest,
        protocol.PredictRequest,
        protocol.ClassificationOutput,
        protocol.TokenClassificationOutput,
    ):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
