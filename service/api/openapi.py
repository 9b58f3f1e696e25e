"""The published OpenAPI description, made to say what this server, with its settings, really does.

FastAPI derives the request and response schemas from the routes. What it cannot see is added here:
that errors are JSON on every route, the request headers read outside the routes' signatures
(``x-deadline-ms``, ``x-request-id``), the size limits that the settings set (answered with 413, so
they are documented in the schema but not enforced by it), and the bearer scheme, declared only where
API keys are required.
Clients generated from the spec then send what the server expects, and fuzzers such as schemathesis
(tests/service/test_openapi_fuzz.py) hold the server to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from slimserve.service.api.hf import routes as hf
from slimserve.service.api.serving import DEADLINE_HEADER
from slimserve.service.api.v2 import routes as v2
from slimserve.service.settings import Settings

INFERENCE_PATHS = ("/v1/sentiment", "/v1/classify", "/v1/ner")
BEARER = "bearer"


def _request_headers(settings: Settings) -> list[dict[str, Any]]:
    return [
        {
            "name": DEADLINE_HEADER,
            "in": "header",
            "required": False,
            "description": "Milliseconds this request may take, queueing included; at most the server's "
            f"deadline ({settings.deadline_ms:g} ms), which applies when the header is absent. "
            "Past it: 504 `timeout`, and work not yet started is dropped.",
            "schema": {"type": "number", "exclusiveMinimum": 0},
        },
        {
            "name": "x-request-id",
            "in": "header",
            "required": False,
            "description": "An id of the client's, echoed in the response and written to the logs "
            "(printable, at most 200 characters; otherwise the server makes one).",
            "schema": {"type": "string"},
        },
    ]


def _document_limits(schema: dict[str, Any], settings: Settings) -> None:
    """``inputs``: one text, or a list of them, both within the configured limits."""
    for option in schema["properties"]["inputs"]["anyOf"]:
        if option.get("type") == "string":
            option["maxLength"] = settings.max_text_chars
        elif option.get("type") == "array":
            option["maxItems"] = settings.max_inputs
            option["items"]["maxLength"] = settings.max_text_chars
    schema["properties"]["inputs"]["description"] += (
        f" At most {settings.max_inputs} texts of at most {settings.max_text_chars} characters each "
        "(this server's settings; beyond them: 413 `payload_too_large`)."
    )


def _document_tensor_limits(schema: dict[str, Any], settings: Settings) -> None:
    """The v2 text tensor's ``data``: the same limits as ``inputs`` elsewhere."""
    (array, _null) = schema["properties"]["data"]["anyOf"]
    array["maxItems"] = settings.max_inputs
    for option in array["items"]["anyOf"]:
        if option["type"] == "string":
            option["maxLength"] = settings.max_text_chars
        else:  # rows of shape [n, 1]: the total must stay within the limit too
            option["maxItems"] = 1
            option["items"]["maxLength"] = settings.max_text_chars
    array["description"] = (
        array.get("description", "") + f" At most {settings.max_inputs} texts of at most "
        f"{settings.max_text_chars} characters each (beyond them: 413)."
    ).strip()


def _errors_are_json(operation: dict[str, Any]) -> None:
    # FastAPI files a route's extra responses under the route's own media type (text/plain for
    # /metrics), but every error is the JSON envelope of errors.py.
    for status, response in operation["responses"].items():
        content = response.get("content", {})
        if status[0] in "45" and "application/json" not in content and content:
            response["content"] = {"application/json": next(iter(content.values()))}


def describe(spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The spec FastAPI generated, completed in place (and returned)."""
    paths = spec["paths"]
    v2.document(spec)
    hf.document(spec)
    for item in paths.values():
        for operation in item.values():
            _errors_are_json(operation)
    for path in INFERENCE_PATHS:
        operation = paths[path]["post"]
        operation.setdefault("parameters", []).extend(_request_headers(settings))
    schemas = spec["components"]["schemas"]
    requests = ("ClassifyRequest", "NerRequest", "PredictRequest")
    for name in (*requests, "TextClassificationRequest", "TokenClassificationRequest"):
        _document_limits(schemas[name], settings)
    _document_tensor_limits(schemas["RequestInput"], settings)
    if settings.api_keys:
        spec["components"]["securitySchemes"] = {
            BEARER: {"type": "http", "scheme": "bearer", "description": "One of the server's API keys."}
        }
        for path, item in paths.items():
            guarded = path.startswith(("/v1/", "/v2/models/", "/hf/")) or (
                path == "/metrics" and settings.metrics_auth
            )
            for operation in item.values():
                if guarded:
                    operation["security"] = [{BEARER: []}]
    return spec


def install(app: FastAPI, settings: Settings) -> None:
    """Make ``app.openapi()`` (and so /openapi.json and /docs) serve the completed description."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(generate(), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
