"""What every gRPC call needs from its context: metadata as the data plane reads headers, its deadline,
its message decoded and answered, and how a failure is answered."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import NoReturn

import grpc
from tritonclient.grpc import service_pb2 as pb

from core.errors import ServingError
from frontends.grpc.codec import decode_request, encode_response
from frontends.grpc.status import error_metadata, status_of
from gateway.auth import combine_credentials
from gateway.settings import LimitSettings
from pipeline.dataplane import Answer, Tensors

log = logging.getLogger("frontends.grpc")


def metadata_map(context: grpc.aio.ServicerContext) -> dict[bytes, bytes]:
    """The call's metadata as lower-case header bytes, the shape the pipeline and the tracer read."""
    pairs = [(key.encode("latin-1"), value if isinstance(value, bytes) else value.encode("latin-1"))
             for key, value in context.invocation_metadata() or ()]
    found = dict(pairs)
    if len(found) != len(pairs):
        combine_credentials(found, pairs)
    return found


def call_timeout_ms(context: grpc.aio.ServicerContext, limit_s: float, timeout_us: int | None = None) -> float:
    """The request's timeout: the earliest of the call's gRPC deadline, the request's own `timeout`
    parameter and the longest any request may take (RTSERVE_LIMIT_REQUEST_TIMEOUT_S, as over REST)."""
    seconds = [limit_s]
    remaining = context.time_remaining()
    if remaining is not None:  # None: the client set no deadline
        seconds.append(remaining)
    if timeout_us is not None:
        seconds.append(timeout_us / 1e6)
    return min(seconds) * 1000.0


class Coder:
    """One message's decoding and encoding for the data plane: the answer's contents take the form
    (raw or typed) the request's inputs came in."""

    __slots__ = ("context", "limits", "raw", "request")

    def __init__(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext, limits: LimitSettings) -> None:
        self.request = request
        self.context = context
        self.limits = limits
        self.raw = False

    async def decode(self, entry: object) -> Tensors:
        decoded = decode_request(self.request, self.limits)
        self.raw = decoded.raw
        return Tensors(decoded.inputs, decoded.outputs, decoded.priority,
                       call_timeout_ms(self.context, self.limits.request_timeout_s, decoded.timeout_us))

    def encode(self, answer: Answer) -> pb.ModelInferResponse:
        return encode_response(self.request.model_name, answer.version, self.request.id, answer.outputs, self.raw)


def response_metadata(headers: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    """Response headers the pipeline collected (request id, version, cache, rate limits) as gRPC metadata."""
    return tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers)


async def fail(context: grpc.aio.ServicerContext, exc: ServingError, request_id: str, rpc: str) -> NoReturn:
    """End the call with the error's status and message; one log line, client mistakes at INFO."""
    level = logging.WARNING if exc.status >= 500 else logging.INFO
    log.log(level, "request %s %s: %s %s: %s", request_id, rpc, status_of(exc).name, exc.code, exc.message)
    await context.abort(status_of(exc), exc.message, error_metadata(exc, request_id))


async def fail_internal(context: grpc.aio.ServicerContext, request_id: str, rpc: str) -> NoReturn:
    """A server fault: logged with its traceback, answered INTERNAL without one."""
    log.exception("request %s %s failed", request_id, rpc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error", (("x-request-id", request_id),))
