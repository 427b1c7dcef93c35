"""A server with the front door off: the same app through BentoML's `mount_asgi_app`, behind its middleware."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from gateway.auth import AuthSettings
from tests.helpers import Gateway, ServerProcess


@pytest.fixture(scope="session")
def behind_bentoml(model_store, tmp_path_factory) -> Iterator[Gateway]:
    """One worker, auth on, no Redis, `RTSERVE_FRONT_DOOR_ENABLED=false`."""
    tmp = tmp_path_factory.mktemp("behind-bentoml")
    secret_file = tmp / "jwt-secret"
    secret_file.write_text(secrets.token_hex(32))
    env = {
        "REDIS_URL": "",
        "RTSERVE_FRONT_DOOR_ENABLED": "false",
        "RTSERVE_AUTH_ENABLED": "true",
        "RTSERVE_AUTH_HS256_SECRET_FILE": str(secret_file),
    }
    server = ServerProcess(env=env, log_path=tmp / "serve.log")
    try:
        yield Gateway(server.start(), AuthSettings(hs256_secret_file=secret_file), "")
    finally:
        server.stop()
