"""KServe V2 `GRPCInferenceService` on the one request pipeline: the servicer `tritonclient.grpc` generates,
with each RPC answered as its REST twin answers (frontends/rest.py).

Metadata RPCs need a token unless their REST path is an open path (health, readiness, server
metadata by default), so both protocols open the same doors. `ModelInfer` runs admit -> route ->
decode -> infer -> encode inside `pipeline.request()`, so metrics, limits, request ids and canary
numbers are the same as over HTTP; the call's gRPC deadline is the request's deadline. Metadata
in: `authorization`, `x-user-id`, `x-request-id`, `cache-control`, `traceparent`; out (initial
metadata): `x-request-id`, `x-model-version`, `x-cache` and the rate-limit headers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from core.errors import ServingError
from frontends.grpc.calls import deadline_of, fail, fail_internal, metadata_map, response_metadata
from frontends.grpc.codec import decode_request, encode_response, select_outputs
from frontends.grpc.settings import GrpcSettings
from frontends.grpc.stream import serve_stream
from frontends.parts import FrontendParts
from frontends.request_ids import request_id_of
from frontends.rest import EXTENSIONS, SERVER_NAME, SERVER_VERSION

SERVICE = "inference.GRPCInferenceService"
INFER_SPAN = f"{SERVICE}/ModelInfer"
GRPC_EXTENSIONS = [e for e in EXTENSIONS if e != "binary_tensor_data"]  # raw contents are gRPC's own binary form

T = TypeVar("T")


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The RPCs this service serves; the rest (shared memory, trace and log settings) stay UNIMPLEMENTED."""

    def __init__(self, parts: FrontendParts, settings: GrpcSettings) -> None:
        self.parts = parts
        self.settings = settings

    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext) -> pb.ServerLiveResponse:
        return await self._metadata_call(context, "ServerLive", "/v2/health/live", lambda: pb.ServerLiveResponse(live=True))

    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext) -> pb.ServerReadyResponse:
        return await self._metadata_call(
            context, "ServerReady", "/v2/health/ready", lambda: pb.ServerReadyResponse(ready=self.parts.is_ready())
        )

    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext) -> pb.ModelReadyResponse:
        path = _model_path(request.name, request.version) + "/ready"
        return await self._metadata_call(
            context,
            "ModelReady",
            path,
            lambda: pb.ModelReadyResponse(ready=self.parts.catalog.ready(request.name, request.version or None)),
        )

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return await self._metadata_call(
            context,
            "ServerMetadata",
            "/v2",
            lambda: pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=GRPC_EXTENSIONS),
        )

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        def answer() -> pb.ModelMetadataResponse:
            doc = self.parts.catalog.metadata(request.name, request.version or None)
            return pb.ModelMetadataResponse(
                name=doc["name"],
                versions=doc["versions"],
                platform=doc["platform"],
                inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in doc.get("inputs", [])],
                outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in doc.get("outputs", [])],
            )

        return await self._metadata_call(context, "ModelMetadata", _model_path(request.name, request.version), answer)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        metadata = metadata_map(context)
        request_id = request_id_of(metadata)
        parts = self.parts
        if parts.on_request is not None:
            parts.on_request()
        pipeline = parts.pipeline
        tracer = pipeline.tracer
        headers = [(b"x-request-id", request_id.encode("ascii"))]
        try:
            async with pipeline.request(headers) as req:
                with tracer.request(INFER_SPAN, metadata, model=request.model_name, request_id=request_id) as span:
                    admitted = await req.admit(metadata.get(b"authorization"), metadata.get(b"x-user-id"), "predict")
                    entry = req.route(request.model_name, request.model_version or None, admitted.user)
                    span.set("version", entry.version)
                    with tracer.span("decode"):
                        decoded = decode_request(request, parts.limits)
                    use_cache = b"no-cache" not in metadata.get(b"cache-control", b"")
                    outputs = await req.infer(entry, decoded.inputs, deadline=deadline_of(context), use_cache=use_cache)
                    outputs = select_outputs(outputs, decoded.outputs)
                    with tracer.span("encode"):
                        response = encode_response(request.model_name, entry.version, request.id, outputs, decoded.raw)
        except ServingError as exc:
            await fail(context, exc, request_id, "ModelInfer")
        except Exception:  # noqa: BLE001 - logged by fail_internal, answered INTERNAL without a traceback
            await fail_internal(context, request_id, "ModelInfer")
        await context.send_initial_metadata(response_metadata(headers))
        return response

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> None:
        await serve_stream(self.parts, self.settings.stream_max_in_flight, request_iterator, context)

    async def _metadata_call(
        self, context: grpc.aio.ServicerContext, rpc: str, rest_path: str, answer: Callable[[], T | Awaitable[T]]
    ) -> T:
        """A call that is not inference: a token unless its REST twin's path is open, then the answer."""
        metadata = metadata_map(context)
        request_id = request_id_of(metadata)
        parts = self.parts
        if parts.on_request is not None:
            parts.on_request()
        try:
            if not parts.open_paths.fullmatch(rest_path):
                parts.pipeline.admission.authorize(metadata.get(b"authorization"), "predict")
            result = answer()
            if isinstance(result, Awaitable):
                result = await result
        except ServingError as exc:
            await fail(context, exc, request_id, rpc)
        except Exception:  # noqa: BLE001 - logged by fail_internal, answered INTERNAL without a traceback
            await fail_internal(context, request_id, rpc)
        await context.send_initial_metadata((("x-request-id", request_id),))
        return result


def _model_path(name: str, version: str) -> str:
    return f"/v2/models/{name}/versions/{version}" if version else f"/v2/models/{name}"
