"""The service's exception tree and the one table that maps it to the contract's error envelope.

Every error a client can see derives from :class:`ServiceError` and carries its HTTP status and the
contract's ``type`` string; the handlers registered by :func:`install_handlers` are the only place
that turns an exception into a response::

    ServiceError
    ├── InputTooLong        400 input_too_long
    ├── Unauthorized        401 unauthorized
    ├── ModelNotFound       404 model_not_found
    ├── PayloadTooLarge     413 payload_too_large
    ├── InvalidRequest      422 validation_error
    ├── Overloaded          503 overloaded (Retry-After)
    ├── NotReady            503 not_ready
    ├── DeadlineExceeded    504 timeout
    ├── ReloadFailed        409 reload_failed   (the old version keeps serving)
    ├── ClientClosed        499 client_closed   (the client left; nobody reads it, metrics count it)
    ├── RouteNotFound       404 not_found       (routing: no such path)
    ├── MethodNotAllowed    405 method_not_allowed (routing: the path exists, the method does not)
    ├── InferenceFailed     500 internal        (a runner failure: never caused by input)
    └── InternalError       500 internal        (a bug; logged with its traceback)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
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


class Unauthorized(ServiceError):
    status = 401
    type = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class ModelNotFound(ServiceError):
    status = 404
    type = "model_not_found"


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
    """A new model version was refused (bad checksum, corrupt ONNX, wrong labels)."""

    status = 409
    type = "reload_failed"


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


def _envelope(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The contract's error body: ``{"error": {"type": ..., "message": ...}}``."""
    return JSONResponse({"error": {"type": type_, "message": message}}, status_code=status, headers=headers)


def error_response(exc: BaseException) -> Response:
    """The response for any exception: the contract's envelope for a ServiceError, 500 ``internal``
    (logged with its traceback) for anything else. The exception handlers below, the fast path and the
    middleware all answer errors through this one function."""
    if not isinstance(exc, ServiceError):
        log.error("unhandled error", exc_info=exc)
        exc = InternalError()
    return _envelope(exc.status, exc.type, exc.message, exc.headers())


class RouteNotFound(ServiceError):
    """No route has this path (routing, not a model lookup)."""

    status = 404
    type = "not_found"


class MethodNotAllowed(ServiceError):
    status = 405
    type = "method_not_allowed"


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


async def _service_error(request: Request, exc: Exception) -> Response:
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(InvalidRequest(describe_validation(exc.errors())))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    # Routing (unknown path, wrong method); the API itself raises ServiceErrors. Anything else
    # Starlette or FastAPI might raise about a request is a request the contract calls invalid.
    error: ServiceError
    if exc.status_code == 404:
        error = RouteNotFound(f"no route {request.url.path}")
    elif exc.status_code == 405:
        error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        response = error_response(error)
        response.headers.update(dict(exc.headers or {}))  # Allow
        return response
    else:
        error = InvalidRequest(str(exc.detail))
    return error_response(error)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s", request.url.path, exc_info=exc)
    return error_response(InternalError())


def install_handlers(app: FastAPI) -> None:
    """The one place where exceptions become HTTP responses."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
