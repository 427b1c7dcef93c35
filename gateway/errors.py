"""One exception hierarchy: each class carries its HTTP status and a machine-readable code.

A single handler turns any `ServingError` into `{"error": ..., "code": ...}` (the Open
Inference Protocol's error shape plus a code). Anything else is a server fault: logged
with its traceback, answered 500 without one.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import ClassVar


class ServingError(Exception):
    status: ClassVar[HTTPStatus] = HTTPStatus.INTERNAL_SERVER_ERROR
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        return {"error": self.message, "code": self.code}


class BadRequest(ServingError):
    status = HTTPStatus.BAD_REQUEST
    code = "bad_request"


class InvalidInput(BadRequest):
    """The body parsed, but a tensor does not match the model's signature or the limits."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "invalid_input"


class Unauthorized(ServingError):
    status = HTTPStatus.UNAUTHORIZED
    code = "unauthorized"


class Forbidden(ServingError):
    status = HTTPStatus.FORBIDDEN
    code = "forbidden"


class NotFound(ServingError):
    status = HTTPStatus.NOT_FOUND
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(ServingError):
    status = HTTPStatus.METHOD_NOT_ALLOWED
    code = "method_not_allowed"


class PayloadTooLarge(ServingError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    code = "payload_too_large"


class UnsupportedMediaType(ServingError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_media_type"


class RateLimited(ServingError):
    status = HTTPStatus.TOO_MANY_REQUESTS
    code = "rate_limited"


class Unavailable(ServingError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "unavailable"


class ModelNotReady(Unavailable):
    code = "model_not_ready"


class QueueFull(Unavailable):
    code = "queue_full"


class BudgetExceeded(Unavailable):
    """The batcher predicts this request would finish past its latency budget."""

    code = "latency_budget_exceeded"


class DeadlineExceeded(ServingError):
    status = HTTPStatus.GATEWAY_TIMEOUT
    code = "deadline_exceeded"


class ModelFailed(ServingError):
    """The model raised while running a batch; every request of the batch gets this."""

    code = "model_error"


class Conflict(ServingError):
    """The change does not fit the current state (e.g. unloading the version that takes all traffic)."""

    status = HTTPStatus.CONFLICT
    code = "conflict"
