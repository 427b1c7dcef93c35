"""The BentoML service: models run in-process behind our adaptive batcher.

The HTTP API (Open Inference Protocol, `/predict`, admin) is a raw ASGI app (frontends/rest.py)
served in front of BentoML's own middleware (app/front_door.py), or with the front door off
(`RTSERVE_FRONT_DOOR_ENABLED=false`) mounted behind it with `mount_asgi_app`. BentoML keeps what it is good
at: the model store, the server and its workers, `bentoml build`. The configuration is validated
in `bentoml serve`'s own process before any worker starts (a deployment hook), so a mistake stops
the server once with one line instead of making BentoML respawn failing workers.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import sys
from collections.abc import Callable
from typing import TypeVar

import bentoml

from app.config import Config, ConfigError, load_config, load_server_settings, load_tls_settings
from app.drain import install as install_drain
from app.front_door import install as install_front_door
from app.front_door import metrics_directory
from app.head_limit import HeadLimitedProtocol
from app.head_limit import install as install_head_limit
from app.metrics_port import PortUnavailable
from app.metrics_port import serve as serve_metrics
from app.ready_line import addresses, announce_when_ready, mark_when_ready
from app.wiring import Runtime
from core.errors import HeaderTooLarge
from frontends.grpc.port_guard import PortTaken, reserve
from frontends.grpc.server import GrpcFrontend
from frontends.rest import InferenceApp
from observability.gcpauses import install_from_environment as record_gc_pauses
from observability.logs import setup_logging
from observability.metrics import UNKNOWN

log = logging.getLogger(__name__)


T = TypeVar("T")


def _or_exit(load: Callable[[], T]) -> T:
    """A configuration mistake stops the process with one line, not a traceback."""
    try:
        return load()
    except ConfigError as exc:
        print(f"rtserve: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


@functools.cache
def configuration() -> Config:
    """The whole configuration, validated once per process: in `bentoml serve`'s own process by the
    deployment hook, before any worker starts (a mistake stops the server there, once, with one line,
    where a worker failing in its constructor would be respawned); in each worker by the service.
    Not on import, so `bentoml build` needs no serving secrets."""
    return _or_exit(load_config)


server = _or_exit(load_server_settings)  # what the declaration below needs, on import
tls = _or_exit(load_tls_settings)


oip_app = InferenceApp()


@bentoml.service(
    name="rtserve",
    workers=server.workers,
    # BentoML's request timeout, for what its own stack still serves (its probes); our paths have ours.
    traffic={"timeout": server.traffic_timeout_s},
    # Our own Prometheus metrics replace BentoML's per-request middleware metrics.
    metrics={"enabled": False},
    logging={"access": {"enabled": False}},
    # Our own spans (observability/tracing.py) cover our paths, which do not pass BentoML's middleware.
    tracing={"sample_rate": 0.0},
    # TLS on the HTTP port through BentoML's own SSL settings, when a certificate is configured (gateway/tls.py).
    **({"ssl": tls.bentoml_ssl()} if tls.enabled else {}),
)
class InferenceService:
    def __init__(self) -> None:
        setup_logging(configuration().logs)
        # Fewer, cheaper collections: the long-lived heap is frozen once the models are loaded.
        gc.set_threshold(50_000, 50, 100)
        self.runtime = Runtime.from_config(configuration())
        metrics = self.runtime.metrics
        HeadLimitedProtocol.configure(  # a refused head is counted as an error of no model, by its code
            configuration().limits.max_header_bytes,
            None if metrics is None else functools.partial(metrics.count_error, UNKNOWN, "", "stable", HeaderTooLarge.code),
        )
        record_gc_pauses()  # opt-in: RTSERVE_GC_PAUSES_ENABLED
        oip_app.bind(self.runtime.parts)
        self.runtime.start()

    @bentoml.on_deployment
    def check_configuration() -> None:
        """Runs first of the deployment hooks (BentoML runs them by name)."""
        configuration()

    @bentoml.on_deployment
    def reserve_grpc_port() -> None:
        """In `bentoml serve`'s own process, before any worker starts: a gRPC port another service holds
        stops the start here, once, with one line (frontends/grpc/port_guard.py)."""
        grpc = configuration().grpc
        if grpc.enabled:
            try:
                reserve(grpc.host, grpc.port, grpc.lock_dir)
            except PortTaken as exc:
                print(f"rtserve: {exc}", file=sys.stderr)
                raise SystemExit(2) from None

    @bentoml.on_deployment
    def serve_metrics_port() -> None:
        """In `bentoml serve`'s own process, for its whole life: Prometheus scrapes on RTSERVE_METRICS_PORT,
        apart from the API and off the workers (app/metrics_port.py)."""
        try:
            serve_metrics(configuration().metrics, metrics_directory())
        except PortUnavailable as exc:
            print(f"rtserve: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    @bentoml.on_deployment
    def log_ready_line() -> None:
        """In `bentoml serve`'s own process: one line with every address once the server is ready (app/ready_line.py)."""
        from bentoml._internal.configuration.containers import BentoMLContainer

        config = configuration()
        setup_logging(config.logs)  # this process's own lines (the workers set theirs up when they start)
        announce_when_ready(addresses(
            sys.argv[1:], BentoMLContainer.http.port.get(), config.tls.enabled,
            (config.grpc.host, config.grpc.port) if config.grpc.enabled else None,
            (config.metrics.host, config.metrics.port) if config.metrics.enabled and config.metrics.port else None),
            workers=server.workers, directory=metrics_directory())

    @bentoml.on_startup
    async def mark_ready(self) -> None:
        """Once this worker is ready, a file that `bentoml serve`'s own process counts before its ready line
        (app/ready_line.py): the directory BentoML shares with its workers and empties at each start."""
        self._ready_mark = asyncio.get_running_loop().create_task(mark_when_ready(lambda: self.runtime.ready, metrics_directory()))

    @bentoml.on_startup
    async def start_grpc(self) -> None:
        """The gRPC front end on the worker's own loop, beside the HTTP app, on the same parts."""
        grpc = configuration().grpc
        credentials = configuration().tls.grpc_credentials()
        max_load = self.runtime.repository_settings.max_load_bytes
        self.grpc = GrpcFrontend(self.runtime.parts, grpc, credentials, max_load) if grpc.enabled else None
        if self.grpc is not None:
            await self.grpc.start()

    @bentoml.on_shutdown
    async def stop_grpc(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop()

    @bentoml.on_startup
    async def log_event_loop(self) -> None:
        """The loop this worker serves on (`RTSERVE_EVENT_LOOP`, app/front_door.py)."""
        log.info("worker event loop: %s", type(asyncio.get_running_loop()).__module__)

    @bentoml.on_startup
    async def drain_on_sigterm(self) -> None:
        """SIGTERM: not ready at once, serving on for RTSERVE_DRAIN_DELAY_S, then uvicorn's graceful shutdown."""
        install_drain(self.runtime.drain, configuration().drain.delay_s)

    @bentoml.on_startup
    async def start_routing(self) -> None:
        """Shared routes and the canary controller start once the models are loaded, in the worker's loop."""
        self._routing = asyncio.get_running_loop().create_task(self.runtime.start_routing())

    @bentoml.on_shutdown
    async def stop_routing(self) -> None:
        await self.runtime.stop_routing()

    def __is_ready__(self) -> bool:
        return self.runtime.ready


if server.front_door_enabled:  # our HTTP paths in front of BentoML's per-request middleware (app/front_door.py)
    install_front_door(InferenceService, oip_app)
else:  # BentoML's supported way, behind its middleware: its probes and routes first, then ours
    InferenceService.mount_asgi_app(oip_app, path="/")
# A request's line and headers limited while they arrive (app/head_limit.py).
install_head_limit()
