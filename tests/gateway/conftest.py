"""A production-shaped server: two workers, auth, rate limits and cache on a real Redis."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis as redis_lib

from gateway.auth import AuthSettings
from gateway.tokens import mint
from tests.helpers import ServerProcess

REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class Gateway:
    server: ServerProcess
    auth: AuthSettings
    prefix: str

    @property
    def url(self) -> str:
        return self.server.url

    def token(self, scopes: str = "predict", tenant: str = "acme", sub: str = "alice", ttl: int = 600) -> str:
        return mint(self.auth, subject=sub, scopes=scopes, tenant=tenant, ttl_s=ttl)

    def headers(self, **kwargs) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(**kwargs)}"}


def gateway_env(secret_file, prefix: str, redis_url: str = REDIS_URL, workers: int = 2) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "RTSERVE_WORKERS": str(workers),
        "RTSERVE_AUTH_ENABLED": "true",
        "RTSERVE_AUTH_HS256_SECRET_FILE": str(secret_file),
        "RTSERVE_RATELIMIT_ENABLED": "true",
        "RTSERVE_RATELIMIT_RATE": "100000",
        "RTSERVE_RATELIMIT_BURST": "100000",
        "RTSERVE_RATELIMIT_TIERS": json.dumps({"tiny": {"rate": 0.5, "burst": 5}}),
        "RTSERVE_RATELIMIT_TENANTS": json.dumps({"tiny-tenant": "tiny"}),
        "RTSERVE_RATELIMIT_KEY_PREFIX": f"{prefix}rl:",
        "RTSERVE_RATELIMIT_REDIS_TIMEOUT_MS": "500",
        "RTSERVE_CACHE_KEY_PREFIX": f"{prefix}cache:",
    }


@pytest.fixture(scope="session")
def gateway(model_store, tmp_path_factory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gateway")
    secret_file = tmp / "jwt-secret"
    secret_file.write_text(secrets.token_hex(32))
    prefix = f"rtserve-test:{uuid.uuid4().hex}:"
    server = ServerProcess(env=gateway_env(secret_file, prefix), log_path=tmp / "serve.log")
    try:
        yield Gateway(server.start(), AuthSettings(hs256_secret_file=secret_file), prefix)
    finally:
        server.stop()
        client = redis_lib.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
