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
    └── InferenceFailed     500 internal        (a runner failure: never caused by input)
"""

from __future__ import annotations

from typing import ClassVar


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


class InferenceFailed(ServiceError):
    status = 500
    type = "internal"
