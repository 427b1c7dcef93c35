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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError

from core.errors import BadRequest, InvalidInput, MethodNotAllowed, NotFound, Unavailable, shown
from frontends.oip_codec import parse_json
from routing.admin import CanaryRequest, ExperimentRequest

if TYPE_CHECKING:
    from pipeline.repository import ModelRepository
    from routing.admin import RoutingAdmin

M = TypeVar("M", bound=BaseModel)


async def handle(
    admin: RoutingAdmin | None,
    method: str,
    parts: list[str],
    body: bytes,
    repository: ModelRepository | None = None,
    query: bytes = b"",
) -> tuple[int, Any]:
    """(status, JSON document) for /admin/... ; `parts` is the path split on '/' without 'admin'.
    `admin` is None until the shared routing state has been reached."""
    try:
        return await _handle(admin, method, parts, body, repository, query)
    except (RedisError, OSError, TimeoutError) as exc:  # Redis down, a read-only or full state folder
        source = admin.store.source if admin is not None else "routing state"
        raise Unavailable(f"routing state unavailable ({source}: {type(exc).__name__}: {exc}); retry later",
                          headers={"Retry-After": "5"}) from None


async def _handle(
    admin: RoutingAdmin | None, method: str, parts: list[str], body: bytes, repository: ModelRepository | None, query: bytes
) -> tuple[int, Any]:
    if admin is None:
        raise Unavailable("routing state is not available yet", headers={"Retry-After": "1"})
    if parts == ["models"]:
        _allow(method, "GET")
        return 200, await admin.describe()
    if parts == ["audit"]:
        _allow(method, "GET")
        if admin.audit is None:
            raise NotFound("no audit log is kept here")
        q = _parse(AuditQuery, orjson.dumps(dict(parse_qsl(query.decode("latin-1")))))
        return 200, [e.model_dump(mode="json") for e in await admin.audit.read(q.limit, q.model)]
    if len(parts) < 3 or parts[0] != "models":
        raise NotFound("no such admin route")
    name, rest = parts[1], parts[2:]
    if len(rest) == 3 and rest[0] == "versions" and rest[2] == "load":
        _allow(method, "POST")
        if repository is None:
            raise Unavailable("routing state is not available yet", headers={"Retry-After": "1"})
        await repository.load(name, [rest[1]])  # answers once every worker serves it; a failure is its error
        return 200, (await admin.store.get(name)).model_dump(mode="json")
    if len(rest) == 3 and rest[0] == "versions" and rest[2] == "unload":
        _allow(method, "POST")
        return 202, (await admin.unload(name, rest[1])).model_dump(mode="json")
    if rest == ["reset"]:
        _allow(method, "POST")
        return 200, (await admin.reset(name)).model_dump(mode="json")
    if rest == ["weights"]:
        _allow(method, "PUT")
        return 200, (await admin.set_weights(name, _parse(WeightsRequest, body).weights)).model_dump(mode="json")
    if rest == ["experiment"]:
        if method == "GET":
            return 200, await admin.experiment_summary(name)
        if method == "POST":
            return 201, (await admin.start_experiment(name, _parse(ExperimentRequest, body))).model_dump(mode="json")
        _allow(method, "GET", "POST", "DELETE")
        return 200, (await admin.stop_experiment(name)).model_dump(mode="json")
    if rest == ["canary"]:
        if method == "GET":
            routes = await admin.store.get(name)
            if routes is None or routes.canary is None:
                raise NotFound(f"no canary of {shown(name)}")
            outcomes = await admin.outcomes(name)
            return 200, {"weights": routes.weights, **routes.canary.model_dump(mode="json"), "outcomes": outcomes}
        if method == "POST":
            return 201, (await admin.start_canary(name, _parse(CanaryRequest, body))).model_dump(mode="json")
        _allow(method, "GET", "POST", "DELETE")
        return 200, (await admin.abort_canary(name)).model_dump(mode="json")
    if rest == ["shadow"]:
        if method == "DELETE":
            return 200, (await admin.set_shadow(name, None, 0.0)).model_dump(mode="json")
        _allow(method, "PUT", "DELETE")
        shadow = _parse(ShadowRequest, body)
        return 200, (await admin.set_shadow(name, shadow.version, shadow.fraction)).model_dump(mode="json")
    raise NotFound("no such admin route")


def _allow(method: str, *allowed: str) -> None:
    """405 naming every method the route takes, unless `method` is one of them."""
    if method not in allowed:
        raise MethodNotAllowed(f"use {' or '.join(allowed)}", headers={"Allow": ", ".join(allowed)})


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


def _parse(model: type[M], body: bytes) -> M:
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
