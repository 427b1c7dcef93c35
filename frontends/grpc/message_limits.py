"""A size limit per RPC: a load with files may be far larger than any other message.

gRPC has one receive limit for the whole server, so the server's is the largest any RPC takes
(RTSERVE_REPOSITORY_MAX_LOAD_BYTES for RepositoryModelLoad) and every other RPC checks its own
(RTSERVE_GRPC_MAX_MESSAGE_BYTES) before the message is parsed: each method's request deserializer
first looks at the message's length, and a message over its limit ends the call with
RESOURCE_EXHAUSTED, as gRPC's own limit would. The check costs a length comparison per message and
one more coroutine call per RPC.

    add_sized(server, pb_grpc.add_GRPCInferenceServiceServicer_to_server, servicer, limit_of)
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc


class _TooLarge:
    """Stands in for a message over its call's limit, so the call can answer RESOURCE_EXHAUSTED."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


class _Capture:
    """Stands in for the server while a generated `add_*_to_server` names its service's handlers."""

    def __init__(self) -> None:
        self.service: str | None = None
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """The generic handler is made again from the sized handlers."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.service, self.handlers = service, handlers


def add_sized(server: grpc.aio.Server, add_to_server: Callable[[Any, Any], None], servicer: Any,
              limit_of: Callable[[str], int]) -> None:
    """Register `servicer` as `add_to_server` would, each method refusing messages over `limit_of(method)`
    (`method`: the full name, `/package.Service/Method`)."""
    capture = _Capture()
    add_to_server(servicer, capture)
    assert capture.service is not None, "the generated code registers its methods by name"
    handlers = {m: _sized(h, limit_of(f"/{capture.service}/{m}")) for m, h in capture.handlers.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(capture.service, handlers),))
    server.add_registered_method_handlers(capture.service, handlers)


def _sized(handler: grpc.RpcMethodHandler, limit: int) -> grpc.RpcMethodHandler:
    parse = handler.request_deserializer

    def checked(data: bytes) -> Any:
        if len(data) > limit:
            return _TooLarge(len(data))
        return parse(data) if parse is not None else data

    async def refuse(size: int, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"message of {size} bytes is over this call's limit of {limit} bytes")

    if handler.unary_unary is not None:
        answer = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _TooLarge):
                await refuse(request.size, context)
            return await answer(request, context)

        return handler._replace(request_deserializer=checked, unary_unary=unary)
    if handler.unary_stream is not None:
        behavior = handler.unary_stream

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _TooLarge):
                await refuse(request.size, context)
            return await _run(behavior(request, context), context)

        return handler._replace(request_deserializer=checked, unary_stream=unary_stream)

    kind = "stream_unary" if handler.stream_unary is not None else "stream_stream"
    behavior = getattr(handler, kind)

    async def streaming(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        async def each() -> AsyncIterator[Any]:
            async for request in requests:
                if isinstance(request, _TooLarge):
                    await refuse(request.size, context)
                yield request

        return await _run(behavior(each(), context), context)

    return handler._replace(request_deserializer=checked, **{kind: streaming})


async def _run(result: Any, context: grpc.aio.ServicerContext) -> Any:
    """A behavior's answer: awaited, or an async generator's items written to the call."""
    if inspect.isasyncgen(result):
        async for item in result:
            await context.write(item)
        return None
    return await result
