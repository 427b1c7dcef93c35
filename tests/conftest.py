"""Session fixtures: a temporary BentoML store with the real demo models, and real servers:
one with embedded defaults, one production-shaped (two workers, auth, limits, cache on Redis)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports bentoml: every test works on its own store, built once below.
_HOME = Path(tempfile.mkdtemp(prefix="rtserve-test-bentoml-"))
os.environ["BENTOML_HOME"] = str(_HOME)
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

from tests.helpers import Gateway, OwnRedis, ServerProcess, running_gateway


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
    with running_gateway(tmp_path_factory.mktemp("gateway")) as gw:
        yield gw
