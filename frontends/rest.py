"""The HTTP front end: the Open Inference Protocol (KServe V2) REST API, `/predict`, batch jobs and the
admin API, as one raw ASGI app mounted into the BentoML service.

Raw ASGI rather than a framework because every microsecond here is paid on every request. The routes,
with the scope each needs, are declared in one table (frontends/routes.py); this module finds the
request's route, checks its caller, calls its handler and writes the answer or the error.
"""

from __future__ import annotations

import asyncio
import logging

from core.errors import ClientDisconnected, DeadlineExceeded, NotFound, ServingError, Unavailable, shown
from frontends.asgi import JSON, Receive, Scope, Send, dumps, header_map, send_response
from frontends.deadlines import deadlines
from frontends.parts import FrontendParts
from frontends.request_ids import request_id_of
from frontends.route_table import HttpRequest
from frontends.routes import TABLE

log = logging.getLogger(__name__)


class InferenceApp:
    """ASGI callable; `bind` gives it the worker's parts once the service instance exists."""

    def __init__(self) -> None:
        self.parts: FrontendParts | None = None

    def bind(self, parts: FrontendParts) -> None:
        self.parts = parts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = header_map(scope)
        request_id = request_id_of(headers)
        extra = [(b"x-request-id", request_id.encode("ascii"))]
        try:
            served = self.parts
            if served is None:
                raise Unavailable("service is starting", headers={"Retry-After": "1"})
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            found = TABLE.find(path, scope["method"], served)
            if found is None:
                if not served.open_paths.fullmatch(path):
                    served.pipeline.admission.authenticate(headers.get(b"authorization"))
                raise NotFound(f"no route for {path}")
            route, params = found
            if served.on_request is not None:
                served.on_request()
            request = HttpRequest(scope, receive, send, headers, extra, request_id, params, route)
            if not route.data_plane_admits and not (route.openable and served.open_paths.fullmatch(path)):
                request.admitted = served.pipeline.admission.authorize(
                    headers.get(b"authorization"), route.scope, headers.get(b"x-user-id"))
            if route.streams:
                await route.handler(served, request)
                return
            budget = deadlines.start(served.limits.request_timeout_s)
            try:
                status, body, content_type = await route.handler(served, request)
            except asyncio.CancelledError:
                if deadlines.expired(budget):  # our own request timeout, not the server going away
                    raise DeadlineExceeded(f"request took longer than {served.limits.request_timeout_s:g} s") from None
                raise
            finally:
                deadlines.stop(budget)
        except ServingError as exc:
            status, body, content_type = exc.status.value, dumps(exc.body()), JSON
            extra.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items())
            # One line per error, with the request id; client mistakes at INFO so they do not page anyone.
            level = logging.WARNING if exc.status >= 500 else logging.INFO
            log.log(level, "request %s %s %s: %d %s: %s", request_id, scope["method"], shown(scope["path"]),
                    exc.status.value, exc.code, exc.message)
        except ClientDisconnected:
            log.info("request %s %s %s: client disconnected", request_id, scope["method"], shown(scope["path"]))
            return
        except Exception:
            log.exception("request %s %s failed", request_id, shown(scope["path"]))
            status, body, content_type = 500, dumps({"error": "internal error", "code": "internal_error"}), JSON
        await send_response(send, status, body, extra, content_type)
