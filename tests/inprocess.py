"""The service's HTTP app in this process, through httpx's ASGI transport: real models, no server process.

Fast enough for every status and edge case of the HTTP surface; the same app that `bentoml serve`
mounts, wired the same way (app.wiring.Runtime), only without BentoML's server around it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from app.wiring import Runtime
from frontends.rest import InferenceApp
from gateway.access import AccessSettings, Grants
from gateway.admission import Admission
from gateway.auth import Authenticator, AuthSettings
from gateway.cache import PredictionCache
from gateway.cache.settings import CacheSettings
from gateway.ratelimit import RateLimiter, RateLimitSettings
from gateway.settings import GatewaySettings, LimitSettings
from gateway.tokens import mint
from jobs.settings import JobSettings
from models.remote import ObjectRepository
from observability.metrics import Metrics, MetricsSettings
from routing.settings import RoutingSettings
from runners.settings import ServingConfig
from tests.helpers import REDIS_URL

MODELS: dict[str, Any] = {
    "digits-sklearn": {"versions": ["v1", "v2"], "weights": {"v1": 100}},
    "seq-torch": {"versions": ["v1"]},
}


@dataclass
class InProcess:
    runtime: Runtime
    app: InferenceApp
    client: httpx.AsyncClient
    auth: AuthSettings | None

    def token(self, scopes: str = "predict", tenant: str | None = "acme", sub: str = "alice") -> str:
        return mint(self.auth, subject=sub, scopes=scopes, tenant=tenant, ttl_s=600)

    def headers(self, scopes: str = "predict", **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(scopes, **kwargs)}"} if self.auth is not None else {}


@asynccontextmanager
async def serve_in_process(
    tmp_path: Path,
    models: dict[str, Any] | None = None,
    *,
    auth: bool = True,
    metrics: bool = False,
    routing: bool = False,
    ratelimit: RateLimitSettings | None = None,
    limits: LimitSettings | None = None,
    access: AccessSettings | None = None,
    gateway: GatewaySettings | None = None,
    cache: CacheSettings | None = None,
    remote: ObjectRepository | None = None,
    redis_prefix: str | None = None,
) -> AsyncIterator[InProcess]:
    """The app over the session's model store, models loaded; with `routing`, the admin API and the
    route sync on a state file in `tmp_path` (polled every 0.1 s), or with `redis_prefix` in the shared Redis
    under that prefix (batch jobs are off then: their default prefix is every server's).

    The prediction cache is on, in memory, as in production; `RTSERVE_TEST_CACHE=off` runs the same
    tests with it off (`make test-cache-off`), leaving server processes that tests start as they are."""
    cache = cache or CacheSettings(enabled=os.environ.get("RTSERVE_TEST_CACHE", "on") != "off")
    settings = None
    if auth:
        secret = tmp_path / "jwt-secret"
        secret.write_text(secrets.token_hex(32))
        settings = AuthSettings(enabled=True, hs256_secret_file=secret)
    admission = Admission(
        Authenticator(settings) if settings is not None else None,
        RateLimiter(ratelimit) if ratelimit is not None and ratelimit.enabled else None,
        grants=Grants(access or AccessSettings(), ratelimit.tenants if ratelimit is not None else {}),
    )
    runtime = Runtime(
        ServingConfig.model_validate({"models": models or MODELS}),
        limits=limits or LimitSettings(),
        admission=admission,
        metrics=Metrics(CollectorRegistry(), MetricsSettings(on_api_port=True, cache_s=0)) if metrics else None,
        gateway=gateway,
        cache=PredictionCache(cache) if cache.enabled else None,
        remote=remote,
        redis=Redis.from_url(REDIS_URL) if redis_prefix is not None else None,
        jobs=JobSettings(enabled=False) if redis_prefix is not None else None,
    )
    await asyncio.to_thread(runtime.start().join)
    if routing:
        runtime.routing_settings = RoutingSettings(state_file=tmp_path / "routes.json", sync_interval_s=0.1, controller_interval_s=0.1,
                                                   redis_prefix=redis_prefix or "rtserve:routes:")
        await runtime.start_routing()
    app = InferenceApp()
    app.bind(runtime.parts)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rtserve.test")
    try:
        yield InProcess(runtime, app, client, settings)
    finally:
        await client.aclose()
        await runtime.stop_routing()
        if runtime.redis is not None:
            await runtime.redis.aclose()
