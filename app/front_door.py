"""The service's own HTTP paths go in front of BentoML's server stack, not through it.

`bentoml serve` wraps every request in its own middleware (context, timeout with a task and a
timer per request, OpenTelemetry, error wrappers, Starlette's router and mount), which cost about
40 % of the throughput of the inference paths and answered some paths (a newline in a model
name) with its own plain-text 404 before our app saw them. The worker builds its ASGI app with
`Service.to_asgi`; the front door wraps that app: HTTP requests go straight to our app, while
lifespan events (the service's start-up and shutdown hooks) and BentoML's own probe paths go to
BentoML's. `bentoml serve`, its workers, graceful shutdown and health endpoints stay as they are.
Our app keeps a request timeout of its own (`RTSERVE_LIMIT_REQUEST_TIMEOUT_S`).

This is the one module that reaches into BentoML's internals; it is pinned to the BentoML minor
version below and refuses to start on another, and tests/app/test_front_door.py fails loudly
when BentoML's worker no longer builds its app through `Service.to_asgi`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import bentoml
from _bentoml_sdk import Service

SUPPORTED_BENTOML = "1.4."
BENTOML_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
"""BentoML's own probe endpoints, answered by its stack; everything else HTTP is ours."""

ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

_doors: dict[int, ASGIApp] = {}


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


def install(service: Service, ours: ASGIApp) -> None:
    """Serve `ours` in front of BentoML's stack in every worker of `service`."""
    if not bentoml.__version__.startswith(SUPPORTED_BENTOML):
        raise RuntimeError(
            f"app/front_door.py supports BentoML {SUPPORTED_BENTOML}x, not {bentoml.__version__}: "
            "check how the worker builds its ASGI app (_bentoml_impl/worker/service.py) before changing the pin"
        )
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
