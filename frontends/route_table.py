"""What an HTTP route is and how a path finds one: the machinery of the route table (frontends/routes.py).

A route is declared once, with its methods, its path template, the scope a caller needs and its
handler; the dispatcher (frontends/rest.py) answers 405 with the route's `Allow` for a method it does not
take, checks the scope, then calls the handler; a path no route has is 404 (to a caller with a token). Matching is a split
of the path and a dict lookup by segment count and last segment: it is paid on every request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.errors import MethodNotAllowed
from frontends.asgi import Receive, Scope, Send

if TYPE_CHECKING:
    from frontends.parts import FrontendParts
    from gateway.admission import Admitted

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
    params: dict[str, str]
    """The path template's `{name}` segments."""
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


@dataclass(slots=True)
class _Template:
    """Every route of one path template, by method."""

    path: str
    literals: tuple[tuple[int, str], ...]
    params: tuple[tuple[int, str], ...]
    by_method: dict[str, Route] = field(default_factory=dict)


class RouteTable:
    """The routes, indexed for matching; built once at import."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)
        templates: dict[str, _Template] = {}
        for route in self.routes:
            segments = route.path.strip("/").split("/")
            template = templates.get(route.path)
            if template is None:
                template = templates[route.path] = _Template(
                    route.path,
                    tuple((i, s) for i, s in enumerate(segments) if not s.startswith("{")),
                    tuple((i, s[1:-1]) for i, s in enumerate(segments) if s.startswith("{")),
                )
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

    def find(self, path: str, method: str, served: FrontendParts) -> tuple[Route, dict[str, str]] | None:
        """The route of `method` on `path` with the path's parameters; None for a path no served route has,
        405 (naming the methods it takes in `Allow`) for a method its route does not take."""
        parts = path.strip("/").split("/")
        count = len(parts)
        for key in ((count, parts[-1]), (count, None)):
            for template in self._shapes.get(key, ()):
                if all(parts[i] == s for i, s in template.literals):
                    route = template.by_method.get(method)
                    if route is not None and (route.served is None or route.served(served)):
                        return route, {name: parts[i] for i, name in template.params}
                    allowed = [m for m, r in template.by_method.items() if r.served is None or r.served(served)]
                    if not allowed:
                        break
                    raise MethodNotAllowed(f"use {' or '.join(allowed)}", headers={"Allow": ", ".join(allowed)})
        return None
