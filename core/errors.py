"""One exception hierarchy: each class carries its HTTP status and a machine-readable code.

A single handler turns any `ServingError` into `{"error": ..., "code": ...}` (the Open
Inference Protocol's error shape plus a code). Anything else is an internal error: logged
with its traceback, answered 500 without one.

Blame says whose doing an outcome is. Only `ModelFailed`, which the batcher raises when the
model's own call fails, is "model": the one blame that counts against a model version (canary
and experiment numbers). An exception nobody anticipated on the request path (a decoder or
validator bug) is "internal": counted and logged like every error, never judged against the
version the router happened to choose, so no client can roll back a canary by finding one.
"""

from __future__ import annotations

import reprlib
from http import HTTPStatus
from typing import ClassVar, Literal

Blame = Literal["model", "internal", "client", "shed"]

ECHO_CHARS = 80
"""Most characters of one client-chosen value (a name, a datatype, a list of unknown fields) that an
error message or a log line repeats."""
MESSAGE_CHARS = 1000
"""Most characters of an error message; longer ones are cut (a backstop for anything `shown` missed)."""

_ECHO = reprlib.Repr()
_ECHO.maxlevel = 2
_ECHO.maxstring = _ECHO.maxother = ECHO_CHARS
_ECHO.maxlist = _ECHO.maxtuple = _ECHO.maxset = _ECHO.maxfrozenset = _ECHO.maxdict = 8


def shown(value: object) -> str:
    """`value`, quoted as `repr` quotes it, as an error message or log line may repeat it.

    A client chooses it, so its length and depth are capped: a name of a megabyte, or a list nested a
    thousand deep (where `repr` itself raises RecursionError), becomes at most ECHO_CHARS characters."""
    if type(value) is str:  # the common case (an input's name, on every request), without reprlib's dispatch
        text = repr(value[:ECHO_CHARS])
        if len(text) <= ECHO_CHARS:
            return text
    text = _ECHO.repr(value)
    return text if len(text) <= ECHO_CHARS else text[: ECHO_CHARS - 3] + "..."


class ServingError(Exception):
    status: ClassVar[HTTPStatus] = HTTPStatus.INTERNAL_SERVER_ERROR
    code: ClassVar[str] = "internal_error"
    blame: ClassVar[Blame] = "internal"
    """Whose doing the outcome is: only "model" faults count against a version in canary numbers;
    "internal" faults of the request path, "client" mistakes and "shed" load (refused to protect
    latency) are counted apart."""

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        if len(message) > MESSAGE_CHARS:
            message = message[: MESSAGE_CHARS - 3] + "..."
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        return {"error": self.message, "code": self.code}


class BadRequest(ServingError):
    status = HTTPStatus.BAD_REQUEST
    blame = "client"
    code = "bad_request"


class InvalidInput(BadRequest):
    """The body parsed, but a tensor does not match the model's signature or the limits."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "invalid_input"


class ModeNotSupported(InvalidInput):
    """The version does not declare the inference mode asked for (real_time, batch, streaming) in its metadata."""

    code = "mode_not_supported"


class Unauthorized(ServingError):
    status = HTTPStatus.UNAUTHORIZED
    blame = "client"
    code = "unauthorized"


class Forbidden(ServingError):
    status = HTTPStatus.FORBIDDEN
    blame = "client"
    code = "forbidden"


class NotFound(ServingError):
    status = HTTPStatus.NOT_FOUND
    blame = "client"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(ServingError):
    status = HTTPStatus.METHOD_NOT_ALLOWED
    blame = "client"
    code = "method_not_allowed"


class PayloadTooLarge(ServingError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    blame = "client"
    code = "payload_too_large"


class HeaderTooLarge(ServingError):
    """The request line and headers exceed their limit; answered by the connection, before any app sees it."""

    status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    blame = "client"
    code = "request_header_too_large"


class RequestTimeout(ServingError):
    """The client took longer than the body read timeout to send its body."""

    status = HTTPStatus.REQUEST_TIMEOUT
    blame = "client"
    code = "request_timeout"


class RateLimited(ServingError):
    status = HTTPStatus.TOO_MANY_REQUESTS
    blame = "client"
    code = "rate_limited"


class Unavailable(ServingError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    blame = "shed"
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
    blame = "client"
    code = "deadline_exceeded"


class ModelFailed(ServingError):
    """The model raised while running a batch; every request of the batch gets this. Only the batcher's
    model call raises it: the marker that a failure was the version's own."""

    code = "model_error"
    blame = "model"


class LoadFailed(ServingError):
    """A worker could not load the version (a broken copy in the model store, or the model raised in warm-up)."""

    code = "load_failed"


class RepositoryTimeout(ServingError):
    """Not every worker had finished a model load or unload when the wait ended; it goes on in the background."""

    status = HTTPStatus.GATEWAY_TIMEOUT
    code = "repository_timeout"


class ModelRefused(ServingError):
    """A model file or directory offered for deployment cannot be served as it is (corrupt, an
    untrusted type, a refused archive, a probe load that failed); nothing was loaded into a worker."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    blame = "client"
    code = "model_refused"


class SignatureRequired(ModelRefused):
    """The model's inputs or outputs cannot be read from the file; the message names what to declare."""

    code = "signature_required"


class ProbeFailed(ModelRefused):
    """The throw-away probe load crashed, ran out of time or went over its memory limit."""

    code = "probe_failed"


class OptimizationRefused(ModelRefused):
    """`rtserve optimize` cannot make the asked-for version from this one (no converter for its format or its
    layers); nothing was stored."""

    code = "optimization_refused"


class AgreementTooLow(OptimizationRefused):
    """The optimized version agrees with its source on the sample less than the bound asks; nothing was stored.
    The answer carries the optimizer's whole report (agreement, differences, latency, size)."""

    code = "agreement_too_low"

    def __init__(self, message: str, report: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.report = report or {}

    def body(self) -> dict[str, object]:  # type: ignore[override]
        return {**super().body(), "report": self.report}


class CodeFormatNotAllowed(ServingError):
    """A format that can run code when loaded (pickle, joblib, TorchScript, torch.export, a runtime by
    import string) was offered while the operator's setting or the deploy's own flag does not allow it."""

    status = HTTPStatus.FORBIDDEN
    blame = "client"
    code = "code_format_not_allowed"


class Conflict(ServingError):
    """The change does not fit the current state (e.g. unloading the version that takes all traffic)."""

    status = HTTPStatus.CONFLICT
    blame = "client"
    code = "conflict"


class StorageQuotaExceeded(ServingError):
    """A deploy would take the model store past its quota (RTSERVE_STORE_QUOTA_MB); nothing was stored."""

    status = HTTPStatus.INSUFFICIENT_STORAGE
    blame = "client"
    code = "storage_quota_exceeded"


def blame_of(code: str) -> Blame:
    """The blame of an error code, as recorded in metrics; an unknown code is an internal fault, never the model's."""
    return _BLAME.get(code, "internal")


def _subclasses(cls: type[ServingError]) -> list[type[ServingError]]:
    return [cls, *(c for sub in cls.__subclasses__() for c in _subclasses(sub))]


CANCELLED = "cancelled"
"""The code recorded for a request whose task was cancelled (the client left, or the server's traffic timeout)."""

_BLAME: dict[str, Blame] = {**{cls.code: cls.blame for cls in _subclasses(ServingError)}, CANCELLED: "client"}


class ClientDisconnected(Exception):
    """The client went away before its request was read; there is no one to answer."""
