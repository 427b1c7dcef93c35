"""What an HTTP route is and how a path finds one: the machinery of the route table (frontends/routes.py).

A route is declared once, with its methods, its path template, the scope a caller needs and its
handler; the dispatcher (frontends/rest.py) answers 405 with the route's `Allow` for a method it does not
take, checks the scope, then calls the handler; a path no route has is 404 (to a caller with a token). Matching is a split
of the path and a dict lookup by segment count and last segment, remembered per path: it is paid on every request.
"""

from __future__ import annotations

import operator
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from core.errors import MethodNotAllowed
from frontends.asgi import Receive, Scope, Send

if TYPE_CHECKING:
    from frontends.parts import FrontendParts
    from gateway.admission import Admitted

RECENT_PATHS = 4096
"""Paths whose match is remembered; more distinct paths than this start the memory afresh."""

Answer = tuple[int, bytes | AsyncIterator[bytes], bytes]
"""(status, body or its pieces, content type)."""


@dataclass(slots=True)
class HttpRequest:
    """One request as its handler sees it, the route matched and the caller admitted."""

    scope: Scope
    receive: Receive
    send: Send
    headers: dict[bytes, bytes]
    extra: list[tuple[bytes, bytes]]
    """Response headers the handler adds to (X-Request-ID is already there)."""
    request_id: str
    params: Mapping[str, str]
    """The path template's `{name}` segments (read-only: requests to the same path share them)."""
    route: Route
    admitted: Admitted | None = None
    """The caller, checked for the route's scope; None on a path `RTSERVE_OPEN_PATHS` opens, and on the
    routes whose caller the data plane admits (`Route.data_plane_admits`)."""


Handler = Callable[["FrontendParts", HttpRequest], Awaitable[Answer | None]]
"""Returns the answer; a `streams` route's handler sends its own response and returns None."""


@dataclass(frozen=True, slots=True)
class Route:
    methods: tuple[str, ...]
    """The methods the document lists; a route with GET also answers HEAD."""
    path: str
    """The template, e.g. `/v2/models/{name}/versions/{version}/infer`: a `{name}` stands for one segment."""
    scope: str
    """The token scope a caller needs when authentication is on: `predict`, `admin` or `batch`."""
    handler: Handler
    openable: bool = False
    """`RTSERVE_OPEN_PATHS` may serve it without a token (metadata and health; never inference or changes)."""
    data_plane_admits: bool = False
    """The data plane admits the caller, per request and with its rate limit, so refusals are counted with
    the request (inference); the dispatcher then checks nothing itself."""
    streams: bool = False
    """Sends its own response as it goes, outside the whole-request timeout."""
    served: Callable[[FrontendParts], bool] | None = None
    """Whether this worker serves it at all; where not, its path answers 404 as if it did not exist."""
    documented: bool = True
    """Part of the API document (False: served only in setups the document does not describe)."""

    @property
    def allow(self) -> tuple[str, ...]:
        return (*self.methods, "HEAD") if "GET" in self.methods and "HEAD" not in self.methods else self.methods


class _Template:
    """Every route of one path template, by method; its literal and parameter segments read with one C call each."""

    __slots__ = ("by_method", "literals", "names", "path", "values", "wanted")

    def __init__(self, path: str, segments: list[str]) -> None:
        self.path = path
        self.by_method: dict[str, Route] = {}
        literal = [i for i, s in enumerate(segments) if not s.startswith("{")]
        params = [i for i, s in enumerate(segments) if s.startswith("{")]
        self.literals = operator.itemgetter(*literal)
        self.wanted = self.literals(segments)
        self.names = tuple(segments[i][1:-1] for i in params)
        self.values = operator.itemgetter(*params, *params) if params else None
        """Each parameter's index twice, so its result is a tuple however many there are."""

    def params(self, parts: list[str]) -> Mapping[str, str]:
        return MappingProxyType({} if self.values is None else dict(zip(self.names, self.values(parts))))


class RouteTable:
    """The routes, indexed for matching; built once at import."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)
        templates: dict[str, _Template] = {}
        for route in self.routes:
            template = templates.get(route.path)
            if template is None:
                template = templates[route.path] = _Template(route.path, route.path.strip("/").split("/"))
            for method in route.allow:
                if method in template.by_method:
                    raise ValueError(f"{method} {route.path} is declared twice")
                template.by_method[method] = route
        # By (segment count, last segment), a template ending in a parameter under (count, None):
        # a literal last segment is tried first, so `/v2/models/stats` is not model `stats`.
        self._shapes: dict[tuple[int, str | None], list[_Template]] = {}
        for template in templates.values():
            segments = template.path.strip("/").split("/")
            last = None if segments[-1].startswith("{") else segments[-1]
            self._shapes.setdefault((len(segments), last), []).append(template)
        self._recent: dict[str, tuple[_Template, Mapping[str, str]]] = {}
        """Paths matched lately, with their template and parameters: the few paths that carry nearly all
        requests (a model's infer path) are then one dict lookup. Emptied when full."""

    def find(self, path: str, method: str, served: FrontendParts) -> tuple[Route, Mapping[str, str]] | None:
        """The route of `method` on `path` with the path's parameters; None for a path no served route has,
        405 (naming the methods it takes in `Allow`) for a method its route does not take."""
        matched = self._recent.get(path)
        if matched is None:
            matched = self._match(path)
            if matched is None:
                return None
            if len(self._recent) >= RECENT_PATHS:
                self._recent.clear()
            self._recent[path] = matched
        template, params = matched
        route = template.by_method.get(method)
        if route is not None and (route.served is None or route.served(served)):
            return route, params
        allowed = [m for m, r in template.by_method.items() if r.served is None or r.served(served)]
        if not allowed:
            return None
        raise MethodNotAllowed(f"use {' or '.join(allowed)}", headers={"Allow": ", ".join(allowed)})

    def _match(self, path: str) -> tuple[_Template, Mapping[str, str]] | None:
        parts = path.strip("/").split("/")
        count = len(parts)
        for key in ((count, parts[-1]), (count, None)):
            for template in self._shapes.get(key, ()):
                if template.literals(parts) == template.wanted:
                    return template, template.params(parts)
        return None
