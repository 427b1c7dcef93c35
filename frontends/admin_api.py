"""The admin HTTP API (scope `admin`): routes, loaded versions, experiments, canaries, shadows.

    GET    /admin/models
    POST   /admin/models/{name}/versions/{version}/load     answers once every worker serves it, or with why not
    POST   /admin/models/{name}/versions/{version}/unload   drained in the background
    PUT    /admin/models/{name}/weights            {"weights": {"v1": 90, "v2": 10}}
    POST   /admin/models/{name}/reset              back to serving.yaml's versions and weights
    GET|POST|DELETE /admin/models/{name}/experiment   POST {"variants": {...}, "control": "v1", "mirror_fraction": 0.1}
    GET|POST|DELETE /admin/models/{name}/canary       POST {"version": "v2", "steps": [...], "hold_s": 30, ...}
    PUT|DELETE /admin/models/{name}/shadow         {"version": "v2", "fraction": 0.1}
    GET    /admin/audit?limit=100&model=NAME       who changed what, newest first (routing/audit.py)
    GET    /admin/backup                           routes and the stored versions they name (pipeline/backup.py)
    POST   /admin/restore                          a backup's body: versions imported, routes written back

The routes are declared in frontends/routes.py; these are their handlers. Without authentication they are not
served (404): nobody may change routes.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError

from core.errors import BadRequest, InvalidInput, NotFound, Unavailable, shown
from frontends.asgi import JSON, dumps, read_body
from frontends.oip_codec import parse_json
from frontends.parts import FrontendParts
from frontends.route_table import Handler, HttpRequest
from pipeline import backup
from routing.admin import CanaryRequest, ExperimentRequest

if TYPE_CHECKING:
    from routing.admin import RoutingAdmin

M = TypeVar("M", bound=BaseModel)


def admin_route(change: Callable[[RoutingAdmin, FrontendParts, HttpRequest], Awaitable[tuple[int, Any]]]) -> Handler:
    """A handler of the routing admin's: 503 until the shared routing state has been reached, and while it cannot be
    read or written."""

    @functools.wraps(change)
    async def handler(served: FrontendParts, request: HttpRequest) -> tuple[int, bytes, bytes]:
        admin = served.admin
        if admin is None:
            raise Unavailable("routing state is not available yet", headers={"Retry-After": "1"})
        try:
            status, doc = await change(admin, served, request)
        except (RedisError, OSError, TimeoutError) as exc:  # Redis down, a read-only or full state folder
            raise Unavailable(f"routing state unavailable ({admin.store.source}: {type(exc).__name__}: {exc}); retry later",
                              headers={"Retry-After": "5"}) from None
        return status, dumps(doc), JSON

    return handler


@admin_route
async def models(admin: RoutingAdmin, served: FrontendParts, request: HttpRequest) -> tuple[int, Any]:
    return 200, await admin.describe()


@admin_route
async def audit(admin: RoutingAdmin, served: FrontendParts, request: HttpRequest) -> tuple[int, Any]:
    if admin.audit is None:
        raise NotFound("no audit log is kept here")
    q = parse_model(AuditQuery, orjson.dumps(dict(parse_qsl(request.scope.get("query_string", b"").decode("latin-1")))))
    return 200, [e.model_dump(mode="json") for e in await admin.audit.read(q.limit, q.model)]


@admin_route
async def take_backup(admin: RoutingAdmin, served: FrontendParts, request: HttpRequest) -> tuple[int, Any]:
    return 200, (await backup.take(admin)).model_dump(mode="json")


@admin_route
async def restore(admin: RoutingAdmin, served: FrontendParts, request: HttpRequest) -> tuple[int, Any]:
    body = await _body(served, request)
    return 200, await backup.restore(admin, parse_json(body) if body else {})


@admin_route
async def load(admin: RoutingAdmin, served: FrontendParts, request: HttpRequest) -> tuple[int, Any]:
    if served.repository is None:
        raise Unavailable("routing state is not available yet", headers={"Retry-After": "1"})
    name = request.params["name"]
    await served.repository.load(name, [request.params["version"]])  # answers once every worker serves it, or fails
    return 200, (await admin.store.get(name)).model_dump(mode="json")


@admin_route
async def unload(admin: RoutingAdmin, served: FrontendParts, request: HttpRequest) -> tuple[int, Any]:
    return 202, (await admin.unload(request.params["name"], request.params["version"])).model_dump(mode="json")


@admin_route
async def reset(admin: RoutingAdmin, served: FrontendParts, request: HttpRequest) -> tuple[int, Any]:
    return 200, (await admin.reset(request.params["name"])).model_dump(mode="json")


@admin_route
async def set_weights(admin: RoutingAdmin, served: FrontendParts, request: HttpRequest) -> tuple[int, Any]:
    weights = parse_model(WeightsRequest, await _body(served, request)).weights
    return 200, (await admin.set_weights(request.params["name"], weights)).model_dump(mode="json")


@admin_route
async def experiment(admin: RoutingAdmin, served: FrontendParts, request: HttpRequest) -> tuple[int, Any]:
    return 200, await admin.experiment_summary(request.params["name"])


@admin_route
async def start_experiment(admin: RoutingAdmin, served: FrontendParts, request: HttpRequest) -> tuple[int, Any]:
    started = await admin.start_experiment(request.params["name"], parse_model(ExperimentRequest, await _body(served, request)))
    return 201, started.model_dump(mode="json")


@admin_route
async def stop_experiment(admin: RoutingAdmin, served: FrontendParts, request: HttpRequest) -> tuple[int, Any]:
    return 200, (await admin.stop_experiment(request.params["name"])).model_dump(mode="json")


@admin_route
async def canary(admin: RoutingAdmin, served: FrontendParts, request: HttpRequest) -> tuple[int, Any]:
    name = request.params["name"]
    routes = await admin.store.get(name)
    if routes is None or routes.canary is None:
        raise NotFound(f"no canary of {shown(name)}")
    outcomes = await admin.outcomes(name)
    return 200, {"weights": routes.weights, **routes.canary.model_dump(mode="json"), "outcomes": outcomes}


@admin_route
async def start_canary(admin: RoutingAdmin, served: FrontendParts, request: HttpRequest) -> tuple[int, Any]:
    started = await admin.start_canary(request.params["name"], parse_model(CanaryRequest, await _body(served, request)))
    return 201, started.model_dump(mode="json")


@admin_route
async def abort_canary(admin: RoutingAdmin, served: FrontendParts, request: HttpRequest) -> tuple[int, Any]:
    return 200, (await admin.abort_canary(request.params["name"])).model_dump(mode="json")


@admin_route
async def set_shadow(admin: RoutingAdmin, served: FrontendParts, request: HttpRequest) -> tuple[int, Any]:
    shadow = parse_model(ShadowRequest, await _body(served, request))
    return 200, (await admin.set_shadow(request.params["name"], shadow.version, shadow.fraction)).model_dump(mode="json")


@admin_route
async def stop_shadow(admin: RoutingAdmin, served: FrontendParts, request: HttpRequest) -> tuple[int, Any]:
    return 200, (await admin.set_shadow(request.params["name"], None, 0.0)).model_dump(mode="json")


async def _body(served: FrontendParts, request: HttpRequest) -> bytes:
    limits = served.limits
    return await read_body(request.receive, request.headers, limits.max_body_bytes, limits.body_read_timeout_s)


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(100, ge=1, le=10_000)
    """Newest lines first, at most this many."""
    model: str | None = None
    """Only this model's lines."""


class WeightsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    weights: dict[str, float]


class ShadowRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    version: str
    fraction: float = Field(gt=0.0, le=1.0)


def parse_model(model: type[M], body: bytes) -> M:
    """The body as `model`; a body that is not JSON is 400, one that does not fit is 422 naming the field."""
    doc = parse_json(body) if body else {}
    if not isinstance(doc, dict):
        raise BadRequest("body must be a JSON object")
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        raise InvalidInput(f"{where}: {err['msg']}" if where else err["msg"]) from None
