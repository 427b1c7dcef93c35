"""Session fixtures: a temporary BentoML store with the real demo models, and real servers:
one with embedded defaults, one production-shaped (two workers, auth, limits, cache on Redis)."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

# Before anything imports bentoml: every test works on its own store, built once below.
_HOME = Path(tempfile.mkdtemp(prefix="rtserve-test-bentoml-"))
os.environ["BENTOML_HOME"] = str(_HOME)
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

from gateway.auth import AuthSettings  # noqa: E402
from tests.helpers import REDIS_URL, Gateway, OwnRedis, ServerProcess, gateway_env  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cache_independent: the prediction cache cannot change what it checks, "
                                       "so `make test-cache-off` leaves it out")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def model_store() -> Path:
    """Every demo model in the session's store, as `python -m demo.build` makes them: a copy of the build
    for the current code, made once and shared by the sessions that follow (tests/demo_store.py).
    The build's folder."""
    from tests.demo_store import seed

    return seed(_HOME)


@pytest.fixture(scope="session")
def server(model_store, tmp_path_factory) -> Iterator[ServerProcess]:
    """One `bentoml serve` with the default serving.yaml and embedded defaults (no Redis)."""
    proc = ServerProcess(env={"REDIS_URL": "", "RTSERVE_METRICS_CACHE_S": "1"}, log_path=tmp_path_factory.mktemp("server") / "serve.log")
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    """A Redis server of the test's own, which it may stop, pause and restart."""
    server = OwnRedis().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def gateway(model_store, tmp_path_factory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gateway")
    secret_file = tmp / "jwt-secret"
    secret_file.write_text(secrets.token_hex(32))
    prefix = f"rtserve-test:{uuid.uuid4().hex}:"
    server = ServerProcess(env=gateway_env(secret_file, prefix), log_path=tmp / "serve.log")
    try:
        gw = Gateway(server.start(), AuthSettings(hs256_secret_file=secret_file), prefix)
        admin = gw.headers(scopes="admin")
        # Ready means the models are warm; the admin API answers once the shared routes are reached too.
        for _ in range(6):  # each on a new connection, so both workers are asked
            server.wait_until(lambda r: r.status_code == 200, "/admin/models", 60, headers=admin)
        yield gw
    finally:
        server.stop()
        client = redis_lib.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
