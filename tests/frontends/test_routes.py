"""The route table (frontends/routes.py) is what the HTTP app does: every route is in the API document with its
methods, any other method is 405 with the route's `Allow`, a token without the route's scope is 403, and a
path is matched by its literal segments before its parameters."""

from __future__ import annotations

import re
from dataclasses import replace

import httpx
import pytest
import pytest_asyncio

from frontends import openapi
from frontends.grpc.servicer import REST_TWINS
from frontends.rest import InferenceApp
from frontends.route_table import Route, RouteTable
from frontends.routes import TABLE, document
from tests.inprocess import serve_in_process

pytestmark = pytest.mark.cache_independent
"""Methods, scopes and the API document of each route: decided before the data plane."""

IN_APP = pytest.mark.asyncio(loop_scope="module")

SCOPES = ("predict", "admin", "batch")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
EXAMPLE = {"name": "digits-sklearn", "version": "v1", "job": "0123456789abcdef01234567", "asset": "swagger-ui.css"}
ROUTED = sorted({(method, route.path) for route in TABLE.routes for method in route.allow})


def concrete(template: str) -> str:
    return template.format(**EXAMPLE)


def allow_of(path: str) -> list[str]:
    return [m for route in TABLE.routes if route.path == path for m in route.allow]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(model_store, tmp_path_factory):
    """Every route served (admin with auth on, jobs, metrics on this port), and nothing open: each route's scope
    is checked, also where the default `RTSERVE_OPEN_PATHS` would open it."""
    tmp = tmp_path_factory.mktemp("routes")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RTSERVE_JOBS_STATE_DIR", str(tmp / "jobs"))
        async with serve_in_process(tmp, {"digits-sklearn": {"versions": ["v1"]}}, metrics=True, routing=True) as s:
            closed = InferenceApp()
            closed.bind(replace(s.runtime.parts, open_paths=re.compile("(?!)")))
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=closed), base_url="http://rtserve.test") as client:
                s.client = client
                yield s


@IN_APP
async def test_every_route_is_in_the_document_with_its_methods(served):
    served_doc = (await served.client.get("/openapi.json", headers=served.headers())).json()
    assert served_doc == document()
    documented = {(m.upper(), p) for p, item in served_doc["paths"].items() for m in item if m.upper() in METHODS}
    routed = {(m, r.path) for r in TABLE.routes if r.documented for m in r.methods}
    assert documented == routed
    assert [r.path for r in TABLE.routes if not r.documented] == ["/metrics", "/docs", "/docs/{asset}"]


def test_the_document_and_the_table_cannot_drift():
    async def handler(served, request):
        raise AssertionError

    with pytest.raises(ValueError, match="no operation for it"):
        openapi.build([*TABLE.routes, Route(("GET",), "/v2/nowhere", "predict", handler)])
    with pytest.raises(ValueError, match=re.escape("no route serves: DELETE /admin/models/{name}/shadow")):
        openapi.build([r for r in TABLE.routes if r.handler.__name__ != "stop_shadow"])
    with pytest.raises(ValueError, match="security"):
        openapi.build([replace(r, openable=False) if r.path == "/v2" else r for r in TABLE.routes])


@IN_APP
@pytest.mark.parametrize("path", sorted({p for _, p in ROUTED}))
async def test_a_method_the_route_does_not_take_is_405_with_its_allow(served, path):
    allowed = allow_of(path)
    for method in sorted(set(METHODS) - set(allowed)):
        r = await served.client.request(method, concrete(path), headers=served.headers(" ".join(SCOPES)))
        assert r.status_code == 405, f"{method} {path}: {r.status_code} {r.text[:200]}"
        assert method == "HEAD" or r.json()["code"] == "method_not_allowed"
        assert r.headers["allow"] == ", ".join(allowed)


@IN_APP
@pytest.mark.parametrize(("method", "path"), ROUTED)
async def test_a_token_without_the_routes_scope_is_403_and_none_is_401(served, method, path):
    route = next(r for r in TABLE.routes if r.path == path and method in r.allow)
    others = " ".join(s for s in SCOPES if s != route.scope)
    r = await served.client.request(method, concrete(path), headers=served.headers(others))
    assert r.status_code == 403, f"{method} {path} with scopes {others!r}: {r.status_code} {r.text[:200]}"
    if method != "HEAD":
        assert r.json()["code"] == "forbidden"
        assert f'scope="{route.scope}"' in r.headers["www-authenticate"]
    assert (await served.client.request(method, concrete(path))).status_code == 401


@IN_APP
async def test_a_path_no_route_has_is_404_to_a_caller_with_a_token_of_any_scope(served):
    for path in ("/v2/models/digits-sklearn/x", "/admin", "/v2/repository/models/digits-sklearn", "/v3"):
        assert (await served.client.get(path)).status_code == 401, path
        for scope in SCOPES:
            r = await served.client.get(path, headers=served.headers(scope))
            assert (r.status_code, r.json()["code"]) == (404, "not_found"), f"{path} with scope {scope}"


def test_literal_segments_match_before_parameters():
    async def handler(served, request):
        raise AssertionError

    table = RouteTable(Route(("GET",), p, "predict", handler) for p in (
        "/v2/models/{name}", "/v2/models/stats", "/v2/models/{name}/versions/{version}", "/v2/repository/models/{name}/load"))

    def find(path: str) -> tuple[str, dict[str, str]] | None:
        found = table.find(path, "GET", None)
        return found and (found[0].path, found[1])

    assert find("/v2/models/stats") == ("/v2/models/stats", {})
    assert find("/v2/models/stat") == ("/v2/models/{name}", {"name": "stat"})
    assert find("/v2/models/m/versions/load/") == ("/v2/models/{name}/versions/{version}", {"name": "m", "version": "load"})
    assert find("/v2/models/m/versions") is None
    assert find("/v2/models/stat") == ("/v2/models/{name}", {"name": "stat"})  # remembered, the same
    with pytest.raises(TypeError):
        table.find("/v2/models/stat", "GET", None)[1]["name"] = "other"  # shared by the requests to the path
    with pytest.raises(ValueError, match="declared twice"):
        RouteTable([Route(("GET",), "/v2", "predict", handler), Route(("GET", "POST"), "/v2", "predict", handler)])


def test_the_grpc_rpcs_open_by_their_rest_twins_name_openable_routes():
    """gRPC opens an RPC when `RTSERVE_OPEN_PATHS` opens all its REST twins: each twin is a route that may be opened."""
    openable = {r.path for r in TABLE.routes if r.openable and r.methods == ("GET",)}
    assert {path for paths in REST_TWINS.values() for path in paths} <= openable
