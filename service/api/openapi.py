"""The published OpenAPI description, made to say what this server, with its settings, really does.

FastAPI derives the response schemas from the routes. What it cannot see is added here: the request
bodies of the inference endpoints (parsed from the raw bytes, ``endpoints.parse``; their schemas come
from the endpoint table's request models), that errors are JSON on every route, the request headers
read outside the routes' signatures (``x-deadline-ms``, ``x-request-id``), the limits that the
settings set (answered with 413, so they are documented in the schema but not enforced by it), and
the bearer scheme, declared only where API keys are required.
Clients generated from the spec then send what the server expects, and fuzzers such as schemathesis
(tests/service/test_openapi_fuzz.py) hold the server to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic.json_schema import models_json_schema
from slimserve.service.api.endpoints import ENDPOINTS
from slimserve.service.api.hf import routes as hf
from slimserve.service.api.serving import DEADLINE_HEADER
from slimserve.service.api.v2 import routes as v2
from slimserve.service.settings import Settings

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


def _request_schemas() -> dict[str, Any]:
    """The endpoint table's request models as OpenAPI components (validation mode, as FastAPI would)."""
    models = {e.request for e in ENDPOINTS}
    _, schema = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    return dict(schema.get("$defs", {}))


def _document_limits(schema: dict[str, Any], settings: Settings) -> None:
    """``inputs``: one text, or a list of them, within the configured limits."""
    for option in schema["properties"]["inputs"]["anyOf"]:
        if option.get("type") == "array":
            option["maxItems"] = settings.max_inputs
    schema["properties"]["inputs"]["description"] += (
        f" At most {settings.max_inputs} texts, a body of at most {settings.max_body_bytes} bytes and "
        f"{settings.max_request_tokens} tokens of model work (this server's settings; beyond them: 413 "
        "`payload_too_large`). Classification cuts a text to the model's window unless `truncate` is "
        "false; NER covers it whole in overlapping windows, each counted."
    )


def _document_tensor_limits(schema: dict[str, Any], settings: Settings) -> None:
    """The v2 text tensor's ``data``: the same limits as ``inputs`` elsewhere."""
    (array, _null) = schema["properties"]["data"]["anyOf"]
    array["maxItems"] = settings.max_inputs
    for option in array["items"]["anyOf"]:
        if option["type"] != "string":  # rows of shape [n, 1]: the total must stay within the limit too
            option["maxItems"] = 1
    array["description"] = (
        array.get("description", "") + f" At most {settings.max_inputs} texts, a body of at most "
        f"{settings.max_body_bytes} bytes and {settings.max_request_tokens} tokens of model work "
        "(beyond them: 413)."
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
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in _request_schemas().items():
        components.setdefault(name, schema)
    for endpoint in ENDPOINTS:
        operation = paths[endpoint.path]["post"]
        operation.setdefault("parameters", []).extend(_request_headers(settings))
    for name in (*sorted({e.request.__name__ for e in ENDPOINTS}), "PredictRequest"):
        _document_limits(components[name], settings)
    for name in ("TextClassificationRequest", "TokenClassificationRequest"):
        _document_limits(components[name], settings)
    _document_tensor_limits(components["RequestInput"], settings)
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
