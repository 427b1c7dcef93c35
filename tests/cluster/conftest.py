"""One cluster for the folder: two replicas (`bentoml serve`, two workers each) behind nginx, on one
Redis of the folder's own that a test may restart. Same JWT key and Redis prefixes for both, so
they share routes, the cache, rate limits and the canary lease."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from deploy.cluster import Nginx
from gateway.auth import AuthSettings
from gateway.tokens import mint
from tests.faults.load import digits_rows, expected_labels, wait_for, wait_for_workers_ready
from tests.helpers import OwnRedis, ServerProcess, gateway_env, new_prefix, new_secret

WORKERS = 2
DRAIN_DELAY_S = 1.0
"""Each replica stays up, not ready, this long after SIGTERM before it stops accepting."""
CLUSTER_ENV = {
    "RTSERVE_DRAIN_DELAY_S": str(DRAIN_DELAY_S),
    "RTSERVE_ROUTING_CONTROLLER_INTERVAL_S": "0.25",  # canary steps of a second need a controller that looks often
}


@dataclass
class Cluster:
    replicas: list[ServerProcess]
    nginx: Nginx
    redis: OwnRedis
    auth: AuthSettings
    prefix: str

    @property
    def url(self) -> str:
        return self.nginx.url

    def headers(self, scopes: str = "predict", tenant: str = "acme", sub: str = "alice", ttl: int = 3600) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint(self.auth, subject=sub, scopes=scopes, tenant=tenant, ttl_s=ttl)}"}

    def start_replica(self, replica: ServerProcess) -> None:
        """(Re)start one replica on its port and wait until both its workers serve, admin API included."""
        replica.start(wait_ready=False)
        self.wait_serving(replica)

    def wait_serving(self, replica: ServerProcess) -> None:
        replica.wait_until(lambda r: r.status_code == 200, replica.ready_path, 300)
        wait_for_workers_ready(replica.url, WORKERS)
        # The admin API answers once a worker has reached the shared routes: ask on new connections until both have.
        admin = self.headers(scopes="admin")
        answered: set[str] = set()

        def both() -> bool:
            r = httpx.get(replica.url + "/admin/models", headers=admin, timeout=5)
            if r.status_code == 200:
                answered.add(r.headers["x-request-id"][:8])
            return len(answered) >= WORKERS

        wait_for(both, 60, "the admin API of both workers", every=0.05)


@pytest.fixture(scope="module")
def digits(model_store) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rows = digits_rows()
    return rows, expected_labels(rows)


@contextlib.contextmanager
def running_cluster(tmp: Path, env: dict[str, str] | None = None, own_store: bool = False,
                    label: str = "rtserve-cluster") -> Iterator[Cluster]:
    """Two replicas behind nginx on a Redis of their own, with `env` on top of the cluster's environment;
    `own_store`: a model store each (a copy), else both read the session's."""
    secret = new_secret(tmp)
    prefix = new_prefix(label)
    redis = OwnRedis().start()
    env = {**gateway_env(secret, prefix, redis_url=redis.url, workers=WORKERS), **CLUSTER_ENV, **(env or {})}
    replicas = [ServerProcess(env=env, log_path=tmp / f"replica-{i}.log", own_store=own_store) for i in range(2)]
    nginx = Nginx(tmp / "nginx", [r.port for r in replicas])
    cluster = Cluster(replicas, nginx, redis, AuthSettings(hs256_secret_file=secret), prefix)
    try:
        for r in replicas:  # both load their models at once
            r.start(wait_ready=False)
        for r in replicas:
            cluster.wait_serving(r)
        nginx.start()
        yield cluster
    finally:
        nginx.stop()
        for r in replicas:
            r.stop()
        redis.stop()


@pytest.fixture(scope="module")
def cluster(model_store, tmp_path_factory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c
