"""KServe V2 `GRPCInferenceService` on the data plane: the servicer `tritonclient.grpc` generates,
with each RPC answered as its REST twin answers (frontends/rest.py).

Metadata RPCs need a token unless their REST twin's route is an open path (server liveness,
readiness and metadata by default), decided by the RPC's name, so both protocols open the same doors. `ModelInfer` hands its
message to `DataPlane.infer`, so metrics, limits, request ids and canary numbers are the same as over HTTP; the request's deadline is the earliest of the call's gRPC
deadline, its `timeout` parameter and the request timeout, and its `priority` parameter picks its
queue, as over REST. Metadata in: `authorization`, `x-user-id`, `x-request-id`, `cache-control`,
`traceparent`; out, in trailing metadata (sent with the status, so it costs no write of its own):
`x-request-id`, `x-model-version`, `x-cache` and the rate-limit headers, or for a failed call
`x-request-id`, `x-error-code` and the error's headers (`retry-after`). The repository and statistics
RPCs are extensions.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from core.errors import ServingError
from frontends.grpc import extensions
from frontends.grpc.calls import Coder, fail, fail_internal, metadata_map, response_metadata
from frontends.grpc.settings import GrpcSettings
from frontends.grpc.stream import serve_stream
from frontends.oip_routes import EXTENSIONS, SERVER_NAME, SERVER_VERSION
from frontends.parts import FrontendParts
from frontends.request_ids import request_id_of
from gateway.admission import Admitted
from pipeline.dataplane import InferenceRequest

SERVICE = "inference.GRPCInferenceService"
INFER_SPAN = f"{SERVICE}/ModelInfer"
GRPC_EXTENSIONS = [e for e in EXTENSIONS if e != "binary_tensor_data"]  # raw contents are gRPC's own binary form

T = TypeVar("T")
Answer = Callable[[dict[bytes, bytes]], T | Awaitable[T]]
"""What a call that is not inference answers, given its metadata (it checks the credentials itself)."""


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The RPCs this service serves; the rest (shared memory, trace and log settings) stay UNIMPLEMENTED."""

    def __init__(self, parts: FrontendParts, settings: GrpcSettings) -> None:
        self.parts = parts
        self.settings = settings
        self.open_rpcs = open_rpcs(parts.open_paths)

    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext) -> pb.ServerLiveResponse:
        return await self._call(context, "ServerLive", self._open("ServerLive", lambda _: pb.ServerLiveResponse(live=True)))

    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext) -> pb.ServerReadyResponse:
        ready = self._open("ServerReady", lambda _: pb.ServerReadyResponse(ready=self.parts.is_ready()))
        return await self._call(context, "ServerReady", ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext) -> pb.ModelReadyResponse:
        def answer(admitted: Admitted | None) -> pb.ModelReadyResponse:
            if admitted is not None:
                admitted.permit(request.name)
            return pb.ModelReadyResponse(ready=self.parts.catalog.ready(request.name, request.version or None))

        return await self._call(context, "ModelReady", self._open("ModelReady", answer))

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        answer = pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=GRPC_EXTENSIONS)
        return await self._call(context, "ServerMetadata", self._open("ServerMetadata", lambda _: answer))

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        def answer(admitted: Admitted | None) -> pb.ModelMetadataResponse:
            if admitted is not None:
                admitted.permit(request.name)
            doc = self.parts.catalog.metadata(request.name, request.version or None)
            return pb.ModelMetadataResponse(
                name=doc["name"],
                versions=doc["versions"],
                platform=doc["platform"],
                inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in doc.get("inputs", [])],
                outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in doc.get("outputs", [])],
            )

        return await self._call(context, "ModelMetadata", self._open("ModelMetadata", answer))

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext) -> pb.ModelConfigResponse:
        def answer(admitted: Admitted | None) -> pb.ModelConfigResponse:
            if admitted is not None:
                admitted.permit(request.name)
            doc = self.parts.catalog.config(request.name, request.version or None)
            return pb.ModelConfigResponse(config=json_format.ParseDict(doc, model_config_pb2.ModelConfig()))

        return await self._call(context, "ModelConfig", self._open("ModelConfig", answer))

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        def answer(admitted: Admitted | None) -> Awaitable[pb.ModelStatisticsResponse]:
            if admitted is not None and request.name:
                admitted.permit(request.name)
            return extensions.statistics(self.parts, request, admitted.may_use if admitted is not None else None)

        return await self._call(context, "ModelStatistics", self._open("ModelStatistics", answer))

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        return await self._call(context, "RepositoryIndex", self._admin(lambda: extensions.index(self.parts, request)))

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        return await self._call(context, "RepositoryModelLoad", self._admin(lambda: extensions.load(self.parts, request)))

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        return await self._call(context, "RepositoryModelUnload", self._admin(lambda: extensions.unload(self.parts, request)))

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        metadata = metadata_map(context)
        request_id = request_id_of(metadata)
        parts = self.parts
        if parts.on_request is not None:
            parts.on_request()
        headers = [(b"x-request-id", request_id.encode("ascii"))]
        coder = Coder(request, context, parts.limits)
        try:
            response = await parts.pipeline.infer(InferenceRequest(
                coder.decode, coder.encode, request.model_name, request.model_version or None,
                credentials=metadata.get(b"authorization"), user=metadata.get(b"x-user-id"),
                use_cache=b"no-cache" not in metadata.get(b"cache-control", b""), span=INFER_SPAN, trace=metadata,
                request_id=request_id, headers=headers))
        except ServingError as exc:
            await fail(context, exc, request_id, "ModelInfer")
        except Exception:  # noqa: BLE001 - logged by fail_internal, answered INTERNAL without a traceback
            await fail_internal(context, request_id, "ModelInfer")
        context.set_trailing_metadata(response_metadata(headers))  # sent with the status: no extra write per call
        return response

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> None:
        await serve_stream(self.parts, self.settings.stream_max_in_flight, self.settings.stream_idle_timeout_s,
                           request_iterator, context)

    def _open(self, rpc: str, answer: Callable[[Admitted | None], T | Awaitable[T]]) -> Answer[T]:
        """An answer that needs a token (scope predict) unless the RPC is open; the answer gets the caller
        (None on an open RPC) to check what it asks for."""

        def answer_for(metadata: dict[bytes, bytes]) -> T | Awaitable[T]:
            admitted = None
            if rpc not in self.open_rpcs:
                admitted = self.parts.pipeline.admission.authorize(metadata.get(b"authorization"), "predict")
            return answer(admitted)

        return answer_for

    def _admin(self, answer: Callable[[], Awaitable[T]]) -> Answer[T]:
        """An answer that needs the admin scope, as the repository's REST routes do."""

        def answer_for(metadata: dict[bytes, bytes]) -> Awaitable[T]:
            self.parts.pipeline.admission.authorize(metadata.get(b"authorization"), "admin")
            return answer()

        return answer_for

    async def _call(self, context: grpc.aio.ServicerContext, rpc: str, answer: Answer[T]) -> T:
        """A call that is not inference: the answer, or the status of its error, with the request id."""
        metadata = metadata_map(context)
        request_id = request_id_of(metadata)
        if self.parts.on_request is not None:
            self.parts.on_request()
        try:
            result = answer(metadata)
            if isinstance(result, Awaitable):
                result = await result
        except ServingError as exc:
            await fail(context, exc, request_id, rpc)
        except Exception:  # noqa: BLE001 - logged by fail_internal, answered INTERNAL without a traceback
            await fail_internal(context, request_id, rpc)
        context.set_trailing_metadata((("x-request-id", request_id),))
        return result


REST_TWINS: dict[str, tuple[str, ...]] = {
    "ServerLive": ("/v2/health/live",),
    "ServerReady": ("/v2/health/ready",),
    "ServerMetadata": ("/v2",),
    "ModelReady": ("/v2/models/{name}/ready", "/v2/models/{name}/versions/{version}/ready"),
    "ModelMetadata": ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"),
    "ModelConfig": ("/v2/models/{name}/config", "/v2/models/{name}/versions/{version}/config"),
    "ModelStatistics": ("/v2/models/stats", "/v2/models/{name}/stats", "/v2/models/{name}/versions/{version}/stats"),
}
"""The REST routes each metadata RPC answers as: fixed templates, never built from a request's fields."""


def open_rpcs(open_paths: re.Pattern[str]) -> frozenset[str]:
    """The RPCs served without a token: those whose every REST twin is an open path. Decided once, by RPC
    name, so no model name or version a client sends can make a call look like an open one."""
    return frozenset(rpc for rpc, routes in REST_TWINS.items() if all(open_paths.fullmatch(r) for r in routes))
