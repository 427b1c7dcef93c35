"""The service's own HTTP paths go in front of BentoML's server stack, not through it.

`bentoml serve` wraps every request in its own middleware (context, timeout with a task and a
timer per request, OpenTelemetry, error wrappers, Starlette's router and mount), which cost about
40 % of the throughput of the inference paths and answered some paths (a newline in a model
name) with its own plain-text 404 before our app saw them. The worker builds its ASGI app with
`Service.to_asgi`; the front door wraps that app: HTTP requests go straight to our app, while
lifespan events (the service's start-up and shutdown hooks) and BentoML's own probe paths go to
BentoML's. `bentoml serve`, its workers, graceful shutdown and health endpoints stay as they are.
Our app keeps a request timeout of its own (`RTSERVE_LIMIT_REQUEST_TIMEOUT_S`).

The worker's uvicorn writes a response's head and its body with two socket writes, so a small
answer costs the server two system calls and the client two wake-ups. `OneWriteCycle` holds the
head until the body's first message and writes both at once; a head with no body following in
the same `send` (a HEAD request, a stream that starts later) goes out when that `send` returns.

BentoML's worker leaves the event loop to uvicorn, which takes uvloop when it is installed.
`RTSERVE_EVENT_LOOP` picks it instead (`LoopSettings`): uvloop for the most throughput, or asyncio's
own loop, which stays fair to every connection when the worker is saturated by requests that never
suspend (uvloop then leaves a few connections unread for up to a second; README, "A tail at
saturation, from uvloop").

It also tells `bentoml serve`'s own process where the workers' metric files are (`metrics_directory`).

This is the one module that reaches into BentoML's internals (app/head_limit.py also subclasses
uvicorn's HTTP protocol, to limit request heads). It is pinned to the exact BentoML and uvicorn
releases below, which pyproject.toml and the bentofiles pin too: it refuses to start on another
BentoML, and serves as uvicorn does on another uvicorn. tests/app/test_front_door.py checks the
behaviour each patch exists for (our app answers what BentoML's router would not match, one socket
write per response, the loop `RTSERVE_EVENT_LOOP` names), so a release that moves the internals fails
there. `RTSERVE_FRONT_DOOR_ENABLED=false` leaves all three alone and mounts our app with BentoML's
supported `mount_asgi_app` instead (service.py), behind BentoML's middleware.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

import bentoml
import uvicorn
from _bentoml_sdk import Service
from pydantic_settings import BaseSettings, SettingsConfigDict
from uvicorn.protocols.http import httptools_impl

log = logging.getLogger(__name__)

SUPPORTED_BENTOML = "1.4.40"
SUPPORTED_UVICORN = "0.55.0"
BENTOML_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
"""BentoML's own probe endpoints, answered by its stack; everything else HTTP is ours."""

ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

_doors: dict[int, ASGIApp] = {}


class LoopSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTSERVE_")

    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    """The worker's event loop: uvloop, or asyncio's own (fair at saturation, 5-20 % less throughput)."""


class FrontDoor:
    """The worker's ASGI app: ours for HTTP, BentoML's for lifespan and its probes."""

    def __init__(self, bentoml_app: ASGIApp, ours: ASGIApp) -> None:
        self.bentoml_app = bentoml_app
        self.ours = ours

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in BENTOML_PATHS:
            await self.ours(scope, receive, send)
        else:
            await self.bentoml_app(scope, receive, send)


class _HeldHead:
    """The connection's transport while a response starts: keeps the head for the body's first write."""

    __slots__ = ("head", "transport")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.head: bytes | None = None

    def write(self, data: bytes) -> None:
        if self.head is None and data.startswith(b"HTTP/") and data.endswith(b"\r\n\r\n"):
            self.head = data
            return
        head, self.head = self.head, None
        self.transport.write(head + data if head else data)

    def release(self) -> Any:
        """Write a head still held; the real transport."""
        if self.head is not None:
            head, self.head = self.head, None
            self.transport.write(head)
        return self.transport

    def close(self) -> None:
        self.release().close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class OneWriteCycle(httptools_impl.RequestResponseCycle):
    """uvicorn's request cycle, writing a response's head together with the body's first message."""

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if not self.response_started and message["type"] == "http.response.start":
            self.transport = _HeldHead(self.transport)  # uvicorn writes the head to it
            try:
                await super().send(message)
            except BaseException:
                self.transport = self.transport.release()
                raise
            return
        try:
            await super().send(message)
        finally:
            if type(self.transport) is _HeldHead:
                self.transport = self.transport.release()


def install(service: Service, ours: ASGIApp) -> None:
    """Serve `ours` in front of BentoML's stack in every worker of `service`."""
    if bentoml.__version__ != SUPPORTED_BENTOML:
        raise RuntimeError(
            f"app/front_door.py supports BentoML {SUPPORTED_BENTOML}, not {bentoml.__version__}: check how the worker "
            "builds its ASGI app (_bentoml_impl/worker/service.py) before changing the pin, or set RTSERVE_FRONT_DOOR_ENABLED=false"
        )
    if uvicorn.__version__ == SUPPORTED_UVICORN:
        httptools_impl.RequestResponseCycle = OneWriteCycle
        _choose_loop()
    else:  # a speed-up, not a need: serve as uvicorn does
        log.warning("app/front_door.py: uvicorn %s is not %s; responses are written as uvicorn writes them, "
                    "on the loop uvicorn picks (RTSERVE_EVENT_LOOP is not applied)", uvicorn.__version__, SUPPORTED_UVICORN)
    _doors[id(service)] = ours
    if getattr(Service.to_asgi, "front_door", False):
        return
    bentoml_to_asgi = Service.to_asgi

    def to_asgi(self: Service, is_main: bool = True) -> ASGIApp:
        app = bentoml_to_asgi(self, is_main=is_main)
        door = _doors.get(id(self))
        return app if door is None else FrontDoor(app, door)

    to_asgi.front_door = True  # type: ignore[attr-defined]
    Service.to_asgi = to_asgi


def metrics_directory() -> str:
    """Where `bentoml serve` has its workers write their Prometheus multiprocess files, for its own process,
    which serves the metrics port (app/metrics_port.py). BentoML hands the workers this directory as
    `PROMETHEUS_MULTIPROC_DIR` whatever its own environment says, and empties it before they start."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return str(BentoMLContainer.prometheus_multiproc_dir.get())


def _choose_loop() -> None:
    """uvicorn's `auto` loop (what BentoML's worker asks for) becomes `RTSERVE_EVENT_LOOP`'s, read when
    the worker starts its server (the setting is validated before any worker starts, app/config.py)."""
    if getattr(uvicorn.Config.get_loop_factory, "front_door", False):
        return
    uvicorn_get_loop_factory = uvicorn.Config.get_loop_factory

    def get_loop_factory(self: uvicorn.Config) -> Any:
        if self.loop == "auto":
            self.loop = LoopSettings().event_loop
        return uvicorn_get_loop_factory(self)

    get_loop_factory.front_door = True  # type: ignore[attr-defined]
    uvicorn.Config.get_loop_factory = get_loop_factory
