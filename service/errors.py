"""The service's exception tree and the one table that maps it to the contract's error envelope.

Every error a client can see derives from :class:`ServiceError` and carries its HTTP status and the
contract's ``type`` string; the handlers registered by :func:`install_handlers` are the only place
that turn an exception into a response (through :func:`error_response`)::

    ServiceError
    ├── InputTooLong        400 input_too_long
    ├── InvalidInput        400 invalid_input   (/v2, /hf: well-formed but inconsistent, e.g. a tensor's
    │                                            shape against its data, an output this model lacks)
    ├── Unauthorized        401 unauthorized
    ├── ModelNotFound       404 model_not_found
    ├── RequestTimeout      408 request_timeout (the body did not arrive in time: slow clients)
    ├── PayloadTooLarge     413 payload_too_large
    ├── InvalidRequest      422 validation_error
    ├── Overloaded          503 overloaded (Retry-After)
    ├── NotReady            503 not_ready       (also: shutting down, a model marked unhealthy)
    ├── DeadlineExceeded    504 timeout
    ├── ReloadFailed        409 reload_failed   (the old version keeps serving)
    ├── ClientClosed        499 client_closed   (the client left; nobody reads it, metrics count it)
    ├── RouteNotFound       404 not_found       (routing: no such path)
    ├── MethodNotAllowed    405 method_not_allowed (routing: the path exists, the method does not)
    ├── InferenceFailed     500 internal        (a runner failure: never caused by input)
    └── InternalError       500 internal        (a bug; logged with its traceback)

:func:`error_response` is the one function that turns any exception into a response: the handlers
registered by :func:`install_handlers`, the fast path and the middleware all answer through it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base of every error the API reports. ``status``/``type`` come from the contract's table."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        return {}


class InputTooLong(ServiceError):
    """A text exceeds the model's window and the request asked not to truncate."""

    status = 400
    type = "input_too_long"

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class InvalidInput(ServiceError):
    """A request of the right types whose parts disagree (the other API surfaces' 400s)."""

    status = 400
    type = "invalid_input"


class Unauthorized(ServiceError):
    status = 401
    type = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class ModelNotFound(ServiceError):
    status = 404
    type = "model_not_found"


class RequestTimeout(ServiceError):
    """The request body did not arrive within the body-read timeout (a slow or stalled client)."""

    status = 408
    type = "request_timeout"


class PayloadTooLarge(ServiceError):
    status = 413
    type = "payload_too_large"


class InvalidRequest(ServiceError):
    status = 422
    type = "validation_error"


class Overloaded(ServiceError):
    status = 503
    type = "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class NotReady(ServiceError):
    status = 503
    type = "not_ready"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class DeadlineExceeded(ServiceError):
    status = 504
    type = "timeout"


class ReloadFailed(ServiceError):
    """A new model version was refused (bad checksum, corrupt ONNX, wrong labels).

    ``transient``: the cause was an I/O error (a network volume hiccup, a file still being copied),
    not the version's content; polling tries it again instead of refusing it for good."""

    status = 409
    type = "reload_failed"

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class ClientClosed(ServiceError):
    """The client went away first: its queued work was dropped. Logged and counted, never read."""

    status = 499
    type = "client_closed"


class InferenceFailed(ServiceError):
    status = 500
    type = "internal"


class InternalError(ServiceError):
    """A bug: logged with its traceback where it was caught."""

    status = 500
    type = "internal"

    def __init__(self) -> None:
        super().__init__("internal error; the request id in x-request-id locates it in the logs")


class RouteNotFound(ServiceError):
    """No route has this path (routing, not a model lookup)."""

    status = 404
    type = "not_found"


class MethodNotAllowed(ServiceError):
    status = 405
    type = "method_not_allowed"


ErrorShape = Callable[[str, str], dict[str, Any]]


def _contract_shape(type_: str, message: str) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message}}


def _v2_shape(type_: str, message: str) -> dict[str, Any]:
    # Open Inference Protocol v2: a flat string (what tritonclient and the kserve SDK read).
    return {"error": message}


def _tei_shape(type_: str, message: str) -> dict[str, Any]:
    # Hugging Face Text Embeddings Inference: the message and a type (huggingface_hub reads "error").
    return {"error": message, "error_type": type_}


ERROR_SHAPES: tuple[tuple[str, ErrorShape], ...] = (("/v2", _v2_shape), ("/hf", _tei_shape))
"""The error body per API surface, by path prefix; /v1 and everything else use the contract's envelope.
Status codes are the same on every surface."""


def error_shape(path: str) -> ErrorShape:
    for prefix, shape in ERROR_SHAPES:
        if path == prefix or path.startswith(prefix + "/"):
            return shape
    return _contract_shape


def envelope(
    status: int, type_: str, message: str, headers: dict[str, str] | None = None, path: str = ""
) -> JSONResponse:
    """The error response: the contract's ``{"error": {"type": ..., "message": ...}}``, or the shape of
    the API surface that ``path`` belongs to (``ERROR_SHAPES``)."""
    return JSONResponse(error_shape(path)(type_, message), status_code=status, headers=headers)


def error_response(exc: BaseException, path: str = "") -> Response:
    """The response for any exception, in the error shape of the API surface ``path`` belongs to: a
    ServiceError's status and type, 500 ``internal`` (logged with its traceback) for anything else."""
    if not isinstance(exc, ServiceError):
        log.error("unhandled error on %s", path or "?", exc_info=exc)
        exc = InternalError()
    return envelope(exc.status, exc.type, exc.message, exc.headers(), path)


def describe_validation(errors: Sequence[Any]) -> str:
    parts = []
    for err in list(errors)[:5]:
        where = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
        if err.get("type") == "json_invalid":
            parts.append(f"malformed JSON ({err.get('ctx', {}).get('error', 'cannot parse')})")
        else:
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = len(errors) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def invalid(errors: Sequence[Any]) -> InvalidRequest:
    """The 422 for a body that pydantic refused (``ValidationError.errors()``), described briefly."""
    return InvalidRequest(describe_validation(errors))


async def _service_error(request: Request, exc: Exception) -> Response:
    return error_response(exc, request.url.path)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(InvalidRequest(describe_validation(exc.errors())), request.url.path)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    # Routing (unknown path, wrong method); the API itself raises ServiceErrors. Anything else
    # Starlette or FastAPI might raise about a request is a request the contract calls invalid.
    path = request.url.path
    if exc.status_code == 404:
        return error_response(RouteNotFound(f"no route {path}"), path)
    if exc.status_code == 405:
        response = error_response(MethodNotAllowed(f"{request.method} is not allowed on {path}"), path)
        response.headers.update(dict(exc.headers or {}))  # Allow
        return response
    return error_response(InvalidRequest(str(exc.detail)), path)


async def _unexpected(request: Request, exc: Exception) -> Response:
    return error_response(exc, request.url.path)


def install_handlers(app: FastAPI) -> None:
    """The one place where exceptions become HTTP responses."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
