"""Every HTTP route, declared once: its methods, its path, the scope its caller needs and its handler.

The dispatcher (frontends/rest.py), authentication by route, the 405's `Allow` and the OpenAPI document
(`document`, from frontends/openapi.yaml's operations) all read this table. Scopes: `predict` for
inference and metadata, `admin` for changes, `batch` for jobs; `openable` routes are served without a
token where `RTSERVE_OPEN_PATHS` matches their path (health, `/v2` and this document by default). The
handlers live with their protocol's code; this table only declares them.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import orjson

from frontends import admin_api, api_page, deploy_api, extensions, jobs_api, oip_routes, openapi, optimize_api, stream
from frontends.asgi import JSON
from frontends.parts import FrontendParts
from frontends.route_table import HttpRequest, Route, RouteTable


async def _document(served: FrontendParts, request: HttpRequest) -> tuple[int, bytes, bytes]:
    return 200, document_json(), JSON


async def _metrics(served: FrontendParts, request: HttpRequest) -> tuple[int, bytes, bytes]:
    served.metrics_current()
    body, content_type = await asyncio.to_thread(served.metrics.exposition)
    return 200, body, content_type.encode()


def _metrics_here(served: FrontendParts) -> bool:
    return served.metrics is not None and served.metrics.on_api_port


def _with_auth(served: FrontendParts) -> bool:
    """The admin API is served only with authentication on: without it nobody may change routes."""
    return served.auth_enabled


MODEL = "/v2/models/{name}"
VERSION = "/v2/models/{name}/versions/{version}"
ADMIN_MODEL = "/admin/models/{name}"


def _admin(methods: tuple[str, ...], path: str, handler: Any) -> Route:
    return Route(methods, path, "admin", handler, served=_with_auth)


def _jobs(methods: tuple[str, ...], path: str, handler: Any) -> Route:
    return Route(methods, path, "batch", handler, served=jobs_api.enabled)


TABLE = RouteTable([
    # Inference: the data plane admits the caller with its rate limit; the hot path, first in its buckets.
    Route(("POST",), f"{MODEL}/infer", "predict", oip_routes.infer, data_plane_admits=True),
    Route(("POST",), f"{VERSION}/infer", "predict", oip_routes.infer, data_plane_admits=True),
    Route(("POST",), "/predict", "predict", oip_routes.predict, data_plane_admits=True),
    Route(("POST",), f"{MODEL}/infer/stream", "predict", stream.serve, streams=True),
    Route(("POST",), f"{VERSION}/infer/stream", "predict", stream.serve, streams=True),
    # Server and model metadata, health.
    Route(("GET",), "/v2", "predict", oip_routes.server_metadata, openable=True),
    Route(("GET",), "/v2/health/live", "predict", oip_routes.live, openable=True),
    Route(("GET",), "/v2/health/ready", "predict", oip_routes.ready, openable=True),
    Route(("GET",), MODEL, "predict", oip_routes.model_metadata, openable=True),
    Route(("GET",), VERSION, "predict", oip_routes.model_metadata, openable=True),
    Route(("GET",), f"{MODEL}/ready", "predict", oip_routes.model_ready, openable=True),
    Route(("GET",), f"{VERSION}/ready", "predict", oip_routes.model_ready, openable=True),
    Route(("GET",), f"{MODEL}/config", "predict", oip_routes.model_config, openable=True),
    Route(("GET",), f"{VERSION}/config", "predict", oip_routes.model_config, openable=True),
    # Triton's statistics and model repository extensions.
    Route(("GET",), "/v2/models/stats", "predict", extensions.statistics, openable=True),
    Route(("GET",), f"{MODEL}/stats", "predict", extensions.statistics, openable=True),
    Route(("GET",), f"{VERSION}/stats", "predict", extensions.statistics, openable=True),
    Route(("POST",), "/v2/repository/index", "admin", extensions.index),
    Route(("POST",), "/v2/repository/models/{name}/load", "admin", extensions.load),
    Route(("POST",), "/v2/repository/models/{name}/unload", "admin", extensions.unload),
    # Batch jobs.
    _jobs(("POST",), "/v2/jobs", jobs_api.submit),
    _jobs(("GET",), "/v2/jobs/{job}", jobs_api.status),
    _jobs(("GET",), "/v2/jobs/{job}/results", jobs_api.results),
    _jobs(("POST",), "/v2/jobs/{job}/cancel", jobs_api.cancel),
    # This document, and the metrics where they share this port (tests; deployed, they have a port of their own).
    Route(("GET",), "/openapi.json", "predict", _document, openable=True),
    Route(("GET",), "/metrics", "predict", _metrics, openable=True, served=_metrics_here, documented=False),
    # The interactive page over this document (a page, not part of the API it shows).
    Route(("GET",), api_page.PAGE_PATH, "predict", api_page.page, openable=True, documented=False),
    Route(("GET",), f"{api_page.PAGE_PATH}/{{asset}}", "predict", api_page.asset, openable=True, documented=False),
    # The admin API.
    _admin(("GET",), "/admin/models", admin_api.models),
    # A user's model uploaded and served; outside the whole-request timeout, as its probe load may take longer.
    Route(("PUT",), f"{ADMIN_MODEL}/versions/{{version}}", "admin", deploy_api.deploy, served=_with_auth, streams=True),
    # A stored version converted, measured beside its source and served with no traffic; a compile takes minutes.
    Route(("POST",), f"{ADMIN_MODEL}/versions/{{version}}/optimize", "admin", optimize_api.optimize, served=_with_auth,
          streams=True),
    _admin(("POST",), f"{ADMIN_MODEL}/versions/{{version}}/load", admin_api.load),
    _admin(("POST",), f"{ADMIN_MODEL}/versions/{{version}}/unload", admin_api.unload),
    _admin(("POST",), f"{ADMIN_MODEL}/reset", admin_api.reset),
    _admin(("GET",), "/admin/audit", admin_api.audit),
    _admin(("GET",), "/admin/backup", admin_api.take_backup),
    _admin(("POST",), "/admin/restore", admin_api.restore),
    _admin(("PUT",), f"{ADMIN_MODEL}/weights", admin_api.set_weights),
    _admin(("GET",), f"{ADMIN_MODEL}/experiment", admin_api.experiment),
    _admin(("POST",), f"{ADMIN_MODEL}/experiment", admin_api.start_experiment),
    _admin(("DELETE",), f"{ADMIN_MODEL}/experiment", admin_api.stop_experiment),
    _admin(("GET",), f"{ADMIN_MODEL}/canary", admin_api.canary),
    _admin(("POST",), f"{ADMIN_MODEL}/canary", admin_api.start_canary),
    _admin(("DELETE",), f"{ADMIN_MODEL}/canary", admin_api.abort_canary),
    _admin(("PUT",), f"{ADMIN_MODEL}/shadow", admin_api.set_shadow),
    _admin(("DELETE",), f"{ADMIN_MODEL}/shadow", admin_api.stop_shadow),
])


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI document of this table's routes."""
    return openapi.build(TABLE.routes)


@functools.cache
def document_json() -> bytes:
    """The response body of `GET /openapi.json`, encoded once per process."""
    return orjson.dumps(document())
