"""Triton's `ModelStreamInfer`: a bidirectional stream of infer requests, each through the data plane.

The stream authenticates once, from its own metadata; each item is then rate limited, routed
(sticky for the stream's user, in the `streaming` mode), cached, batched and counted like any
request. Items run concurrently, at most `max_in_flight` at a time: past that the stream is not
read, so gRPC's flow control holds the client back. An item's error is sent inline as
`error_message` (its code in the response's `error_code` parameter) and the stream goes on. A
client that goes away cancels the items still in flight, which frees their places in the queues.
Answers carry the item's `id` and come in the order they are ready.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator

import grpc
from tritonclient.grpc import service_pb2 as pb

from core.errors import RequestTimeout, ServingError
from frontends.grpc.calls import Coder, fail, metadata_map
from frontends.parts import FrontendParts
from frontends.request_ids import request_id_of
from gateway.admission import Admitted
from pipeline.dataplane import InferenceRequest

log = logging.getLogger("frontends.grpc")

STREAM_SPAN = "inference.GRPCInferenceService/ModelStreamInfer"


async def serve_stream(
    parts: FrontendParts,
    max_in_flight: int,
    idle_timeout_s: float,
    requests: AsyncIterator[pb.ModelInferRequest],
    context: grpc.aio.ServicerContext,
) -> None:
    """Serve the stream's items until the client is done, goes `idle_timeout_s` without an item, or its token
    expires; in the last two cases the items in flight are answered, then the call ends with the reason."""
    metadata = metadata_map(context)
    stream_id = request_id_of(metadata)
    if parts.on_request is not None:
        parts.on_request()
    try:
        admitted = parts.pipeline.admission.identify(metadata.get(b"authorization"), metadata.get(b"x-user-id"), "predict")
    except ServingError as exc:
        await fail(context, exc, stream_id, "ModelStreamInfer")
    await context.send_initial_metadata((("x-request-id", stream_id),))
    stream = _Stream(parts, context, metadata, admitted, stream_id)
    slots = asyncio.Semaphore(max_in_flight)
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    items = aiter(requests)
    ended: ServingError | None = None
    try:
        index = 0
        while True:
            try:
                item = await _next_item(items, admitted, idle_timeout_s)
            except ServingError as exc:
                ended = exc
                break
            if item is None:
                break
            await slots.acquire()
            task = loop.create_task(stream.serve(item, f"{stream_id}.{index}"))
            tasks.add(task)
            task.add_done_callback(functools.partial(_item_done, tasks, slots))
            index += 1
        if tasks:  # the client is done sending, or the stream is over: answer what is still in flight
            await asyncio.wait(set(tasks))
        if ended is not None:
            await fail(context, ended, stream_id, "ModelStreamInfer")
    finally:
        for task in tasks:  # the client went away (the call was cancelled): nobody wants these answers
            task.cancel()


async def _next_item(
    items: AsyncIterator[pb.ModelInferRequest], admitted: Admitted, idle_timeout_s: float
) -> pb.ModelInferRequest | None:
    """The stream's next item, None at its end; RequestTimeout after an idle spell, Unauthorized once the token
    the stream was opened with has expired (it was checked once, at the start)."""
    token_s = admitted.seconds_left()
    try:
        async with asyncio.timeout(min(idle_timeout_s, token_s)):
            item = await anext(items)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        if token_s < idle_timeout_s:
            raise admitted.expired() from None
        raise RequestTimeout(f"no item within {idle_timeout_s:g} s; stream closed") from None
    if admitted.seconds_left() <= 0:
        raise admitted.expired()
    return item


def _item_done(tasks: set[asyncio.Task[None]], slots: asyncio.Semaphore, task: asyncio.Task[None]) -> None:
    tasks.discard(task)
    slots.release()
    if not task.cancelled() and task.exception() is not None:  # only writing to a stream that is gone gets here
        log.debug("stream item not delivered: %s", task.exception())


class _Stream:
    """What the items of one stream share: who calls, the metadata, and the one writer."""

    def __init__(
        self,
        parts: FrontendParts,
        context: grpc.aio.ServicerContext,
        metadata: dict[bytes, bytes],
        admitted: Admitted,
        stream_id: str,
    ) -> None:
        self.parts = parts
        self.context = context
        self.metadata = metadata
        self.admitted = admitted
        self.stream_id = stream_id
        self.use_cache = b"no-cache" not in metadata.get(b"cache-control", b"")
        self._writing = asyncio.Lock()  # one write at a time on the call

    async def serve(self, item: pb.ModelInferRequest, request_id: str) -> None:
        try:
            response = pb.ModelStreamInferResponse(infer_response=await self._infer(item, request_id))
        except ServingError as exc:
            level = logging.WARNING if exc.status >= 500 else logging.INFO
            log.log(level, "request %s ModelStreamInfer item: %s: %s", request_id, exc.code, exc.message)
            response = _error(item, exc.message, exc.code)
        except Exception:  # one item's fault is answered inline, never ends the stream
            log.exception("request %s ModelStreamInfer item failed", request_id)
            response = _error(item, "internal error", "internal_error")
        async with self._writing:
            await self.context.write(response)

    async def _infer(self, item: pb.ModelInferRequest, request_id: str) -> pb.ModelInferResponse:
        coder = Coder(item, self.context, self.parts.limits)
        return await self.parts.pipeline.infer(InferenceRequest(
            coder.decode, coder.encode, item.model_name, item.model_version or None, admitted=self.admitted,
            mode="streaming", use_cache=self.use_cache, span=STREAM_SPAN, trace=self.metadata, request_id=request_id))


def _error(item: pb.ModelInferRequest, message: str, code: str) -> pb.ModelStreamInferResponse:
    response = pb.ModelStreamInferResponse(
        error_message=message,
        infer_response=pb.ModelInferResponse(model_name=item.model_name, model_version=item.model_version, id=item.id),
    )
    response.infer_response.parameters["error_code"].string_param = code
    return response
