"""The gRPC server of one worker: grpc.aio on the worker's own event loop, beside the HTTP app.

grpc.aio polls its completion queue on a thread of its own and wakes the loop through a file
descriptor, so it runs on BentoML's uvloop as it is: requests meet the batcher, the cache and
the metrics on the loop that owns them, with no hand-off between threads. The workers of a
service share the port (SO_REUSEPORT); port_guard.py keeps any other service off it. The
standard gRPC health service answers SERVING for the whole server and for
`inference.GRPCInferenceService` once every configured version is loaded. Each RPC has its own
message limit (message_limits.py): a load with files may be larger than any other message.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from frontends.grpc.message_limits import add_sized
from frontends.grpc.port_guard import check_shared
from frontends.grpc.servicer import SERVICE, InferenceServicer
from frontends.grpc.settings import GrpcSettings
from frontends.parts import FrontendParts

log = logging.getLogger("frontends.grpc")

LOAD_RPC = f"/{SERVICE}/RepositoryModelLoad"
READINESS_POLL_S = 0.5
"""How often the health service looks at readiness; it changes at start-up and when versions load or fail."""


class GrpcFrontend:
    def __init__(self, parts: FrontendParts, settings: GrpcSettings, credentials: grpc.ServerCredentials | None = None,
                 max_load_bytes: int | None = None) -> None:
        """`credentials`: serve TLS with them (gateway/tls.py); None serves the port in the clear.
        `max_load_bytes`: the largest RepositoryModelLoad message (a load with files); None: as any other."""
        self.parts = parts
        self.settings = settings
        self.credentials = credentials
        self.max_load_bytes = max_load_bytes or settings.max_message_bytes
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None
        self._health = health.aio.HealthServicer()
        self._tracking: asyncio.Task[None] | None = None

    async def start(self, *, shared: bool = True) -> int:
        """Bind and serve on the running loop; the bound port. `shared`: the port is reserved by this
        worker's `bentoml serve` (port_guard.py), checked before binding; False serves a port of its own."""
        settings = self.settings
        if shared:
            check_shared(settings.port, settings.lock_dir)
        size = settings.max_message_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 1 if shared else 0),
                ("grpc.max_receive_message_length", max(size, self.max_load_bytes)),  # each RPC checks its own
                ("grpc.max_send_message_length", size),
            ]
        )
        servicer = InferenceServicer(self.parts, settings)
        add_sized(server, pb_grpc.add_GRPCInferenceServiceServicer_to_server, servicer, self._limit_of)
        add_sized(server, health_pb2_grpc.add_HealthServicer_to_server, self._health, self._limit_of)
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        address = f"{host}:{settings.port}"
        if self.credentials is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, self.credentials)
        await server.start()
        self.server = server
        self._tracking = asyncio.get_running_loop().create_task(self._track_readiness())
        log.info("gRPC (KServe V2 GRPCInferenceService) on %s:%d%s", settings.host, self.port, " (TLS)" if self.credentials else "")
        return self.port

    def _limit_of(self, method: str) -> int:
        """The largest request message `method` takes (message_limits.py)."""
        return self.max_load_bytes if method == LOAD_RPC else self.settings.max_message_bytes

    async def stop(self) -> None:
        """Refuse new calls, let calls in progress finish for the grace period, then cancel the rest."""
        if self._tracking is not None:
            self._tracking.cancel()
        if self.server is not None:
            await self._health.enter_graceful_shutdown()
            await self.server.stop(self.settings.shutdown_grace_s)

    async def _track_readiness(self) -> None:
        serving = None
        while True:
            ready = self.parts.is_ready()
            if ready is not serving:
                status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
                for name in (health.OVERALL_HEALTH, SERVICE):
                    await self._health.set(name, status)
                serving = ready
            await asyncio.sleep(READINESS_POLL_S)
