"""Session fixtures: a temporary BentoML store with the real demo models, and a real server."""

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

from tests.helpers import OwnRedis, ServerProcess  # noqa: E402


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def model_store() -> dict[str, float]:
    """Train and save every demo model into the session's store; tag -> held-out accuracy."""
    from models.build import build_all

    return build_all(log=lambda line: None)


@pytest.fixture(scope="session")
def server(model_store, tmp_path_factory) -> Iterator[ServerProcess]:
    """One `bentoml serve` with the default serving.yaml and embedded defaults (no Redis)."""
    proc = ServerProcess(env={"REDIS_URL": ""}, log_path=tmp_path_factory.mktemp("server") / "serve.log")
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
