"""Two real servers for the fault tests, each started once for the folder.

- `fault_gateway`: the production shape (two workers, auth, limits, cache, routes on a Redis of
  its own that tests may stop), serving digits-sklearn plus the fault versions of faultmodels.py.
- `file_gateway`: one worker without Redis (routes in a state file whose folder a test makes
  read-only), whose serving.yaml also names a version that cannot load, and a body read timeout.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from gateway.auth import AuthSettings
from tests.faults.faultmodels import build_fault_versions
from tests.faults.load import digits_rows, expected_labels, wait_for, wait_for_workers_ready
from tests.helpers import Gateway, OwnRedis, ServerProcess, gateway_env

SLOW_DELAY_S = 0.25
"""Each call of faults-slow sleeps this long."""
SLOW_BATCHING = {"max_batch_size": 2, "max_queue_rows": 4, "max_latency_ms": 10_000, "inline_max_ms": 0}
"""faults-slow queues at most 4 rows per worker; the budget is generous so the queue bound is what refuses."""
BODY_READ_TIMEOUT_S = 2.0


def _config(path: Path, models: dict) -> Path:
    path.write_text(yaml.safe_dump({"torch_threads": 1, "models": models}))
    return path


@pytest.fixture(scope="session")
def fault_versions(model_store) -> None:
    build_fault_versions(SLOW_DELAY_S)


@pytest.fixture(scope="session")
def digits(model_store) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Fixed inputs and the label each digits-sklearn version gives them."""
    rows = digits_rows()
    return rows, expected_labels(rows)


@pytest.fixture(scope="session")
def fault_secret(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "jwt-secret"
    path.write_text(secrets.token_hex(32))
    return path


@pytest.fixture(scope="session")
def fault_redis() -> Iterator[OwnRedis]:
    server = OwnRedis().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fault_gateway(fault_versions, fault_secret, fault_redis, tmp_path_factory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("fault-gateway")
    # faults-slow first: its warm-up sleeps, so a restarted worker takes requests for the others while it loads.
    config = _config(
        tmp / "serving.yaml",
        {
            "faults-slow": {"versions": ["v1"], "batching": SLOW_BATCHING},
            "digits-sklearn": {"versions": ["v1", "v2"], "weights": {"v1": 100}},
            "faults-picky": {"versions": ["v1"]},
        },
    )
    env = {**gateway_env(fault_secret, "faults:", redis_url=fault_redis.url, workers=2), "RTSERVE_CONFIG": str(config)}
    server = ServerProcess(env=env, log_path=tmp / "serve.log")
    try:
        server.start()
        wait_for_workers_ready(server.url, 2)  # the first ready answer may come from either one
        yield Gateway(server, AuthSettings(hs256_secret_file=fault_secret), "faults:")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def file_gateway(fault_versions, fault_secret, tmp_path_factory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("file-gateway")
    config = _config(tmp / "serving.yaml", {"digits-sklearn": {"versions": ["v1", "corrupt"], "weights": {"v1": 100}}})
    env = {
        **gateway_env(fault_secret, "", redis_url="", workers=1),
        "RTSERVE_CONFIG": str(config),
        "RTSERVE_ROUTING_STATE_FILE": str(tmp / "state" / "routes.json"),
        "RTSERVE_LIMIT_BODY_READ_TIMEOUT_S": str(BODY_READ_TIMEOUT_S),
    }
    server = ServerProcess(env=env, log_path=tmp / "serve.log")
    try:
        # Never ready as a whole (a configured version cannot load): wait for the version that can.
        server.start(wait_ready=False)
        gateway = Gateway(server, AuthSettings(hs256_secret_file=fault_secret), "")
        server.wait_until(lambda r: r.status_code == 200, "/v2/models/digits-sklearn/versions/v1/ready", 180,
                          headers=gateway.headers(ttl=3600))
        # Admin answers once the worker has read the routing state (after its models are loaded).
        admin = gateway.headers(scopes="admin")
        wait_for(
            lambda: httpx.get(gateway.url + "/admin/models", headers=admin, timeout=5).status_code == 200, 30, "the admin API"
        )
        yield gateway
    finally:
        server.stop()
