"""How a `ServingError` becomes a gRPC status: the code from its HTTP status, the message as REST sends it.

The error's machine-readable code travels in trailing metadata (`x-error-code`), with its
`Retry-After` when it has one, so a gRPC client can tell the same cases apart as a REST client.
"""

from __future__ import annotations

from http import HTTPStatus

import grpc

from core.errors import ServingError

_BY_STATUS: dict[int, grpc.StatusCode] = {
    HTTPStatus.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    HTTPStatus.UNPROCESSABLE_ENTITY: grpc.StatusCode.INVALID_ARGUMENT,
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: grpc.StatusCode.INVALID_ARGUMENT,
    HTTPStatus.UNAUTHORIZED: grpc.StatusCode.UNAUTHENTICATED,
    HTTPStatus.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    HTTPStatus.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    HTTPStatus.METHOD_NOT_ALLOWED: grpc.StatusCode.UNIMPLEMENTED,
    HTTPStatus.CONFLICT: grpc.StatusCode.FAILED_PRECONDITION,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    HTTPStatus.TOO_MANY_REQUESTS: grpc.StatusCode.RESOURCE_EXHAUSTED,
    HTTPStatus.REQUEST_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    HTTPStatus.GATEWAY_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    HTTPStatus.SERVICE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}


def status_of(exc: ServingError) -> grpc.StatusCode:
    """The gRPC code of an error; anything without one of its own is INTERNAL."""
    return _BY_STATUS.get(exc.status, grpc.StatusCode.INTERNAL)


def error_metadata(exc: ServingError, request_id: str) -> tuple[tuple[str, str], ...]:
    """Trailing metadata of a failed call: the request id, the error code and the error's own headers."""
    extra = tuple((k.lower(), v) for k, v in exc.headers.items())
    return (("x-request-id", request_id), ("x-error-code", exc.code), *extra)
