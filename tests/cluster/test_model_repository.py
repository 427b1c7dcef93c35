"""Two replicas with a model store each and one model repository (SeaweedFS), behind nginx, under a steady
load through nginx: a version deployed through replica A is served by B, its next version canaries and
promotes on both, object storage stopped in the middle of a pull leaves no half-installed version and the
pull recovers, and no request is lost through all of it."""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx
import numpy as np
import pytest

from deploy.cluster import Nginx
from deploy.objectstore import SeaweedFS
from gateway.auth import AuthSettings
from models.importer import ImportOptions, import_model
from models.remote import ModelRepositorySettings, ObjectRepository
from models.settings import ImportSettings
from tests.cluster.conftest import CLUSTER_ENV, WORKERS, Cluster
from tests.faults.load import SteadyLoad, wait_for
from tests.helpers import OwnRedis, ServerProcess, gateway_env
from tests.models.makers import iris_skops

pytestmark = pytest.mark.timeout(1200)  # two replicas' start, a 100 MiB model twice, storage restarted

BIG_FEATURES = 5120
"""A 5120 x 5120 float32 weight: a 100 MiB model."""


@dataclass
class RepoCluster(Cluster):
    s3: SeaweedFS
    remote: ObjectRepository


@pytest.fixture(scope="module")
def repo_cluster(model_store, tmp_path_factory) -> Iterator[RepoCluster]:
    tmp = tmp_path_factory.mktemp("repo-cluster")
    secret = tmp / "jwt-secret"
    secret.write_text(secrets.token_hex(32))
    prefix = f"rtserve-repo-cluster:{uuid.uuid4().hex}:"
    s3 = SeaweedFS(tmp / "seaweedfs").start()
    s3_env = s3.env(f"s3://models/{uuid.uuid4().hex[:8]}")
    remote = ObjectRepository(ModelRepositorySettings(
        url=s3_env["RTSERVE_MODEL_REPOSITORY"], endpoint_url=s3.endpoint, access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
        secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"], region="us-east-1"))
    redis = OwnRedis().start()
    env = {**gateway_env(secret, prefix, redis_url=redis.url, workers=WORKERS), **CLUSTER_ENV, **s3_env,
           "RTSERVE_MODEL_REPOSITORY_BACKOFF_S": "0.2", "RTSERVE_MODEL_REPOSITORY_BACKOFF_MAX_S": "1",
           "RTSERVE_MODEL_REPOSITORY_TIMEOUT_S": "3", "RTSERVE_ROUTING_READINESS_SCOPE": "configured"}
    replicas = [ServerProcess(env=env, log_path=tmp / f"replica-{i}.log", own_store=True) for i in range(2)]
    nginx = Nginx(tmp / "nginx", [r.port for r in replicas])
    cluster = RepoCluster(replicas, nginx, redis, AuthSettings(hs256_secret_file=secret), prefix, s3, remote)
    try:
        for r in replicas:
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
        s3.stop()


def big_onnx(folder: Path, seed: int) -> Path:
    """x [batch, 5120] @ W [5120, 5120], summed per row: y [batch, 1]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).standard_normal((BIG_FEATURES, BIG_FEATURES), dtype=np.float32) / 100
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("ReduceSum", ["h", "axes"], ["y"], keepdims=1)],
        "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", BIG_FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / f"big-{seed}.onnx"
    onnx.save(model, str(path))
    return path


def deploy(cluster: RepoCluster, name: str, version: str, source: Path) -> float:
    """What every deploy path does, the upload aside: import with the probe, push, then load through replica A
    (which lacks it too, its store being its own); returns when the push started."""
    import_model(name, version, source, ImportOptions(), ImportSettings())
    started = time.monotonic()
    cluster.remote.push(f"{name}:{version}")
    r = httpx.post(f"{cluster.replicas[0].url}/admin/models/{name}/versions/{version}/load",
                   headers=cluster.headers(scopes="admin"), timeout=30)
    assert r.status_code in (200, 504), r.text  # 504: still pulling when the admin wait ended; it goes on
    return started


def body(url: str, headers: dict[str, str], name: str, row: np.ndarray) -> dict | None:
    """An inference body for the model's input, or None while this worker does not describe the model yet."""
    meta = httpx.get(f"{url}/v2/models/{name}", headers=headers, timeout=10)
    inputs = meta.json().get("inputs") if meta.status_code == 200 else None  # none while the version loads
    if not inputs:
        return None
    return {"inputs": [{"name": inputs[0]["name"], "shape": [1, len(row)], "datatype": "FP32",
                        "data": [float(v) for v in row]}]}


def answers(replica: ServerProcess, headers: dict[str, str], name: str, version: str, row: np.ndarray) -> bool:
    """Whether both workers of the replica answer NAME:VERSION (a new connection each time)."""
    path = f"{replica.url}/v2/models/{name}/versions/{version}/infer"
    seen: set[str] = set()
    for _ in range(8):
        try:
            request = body(replica.url, headers, name, row)
            r = httpx.post(path, json=request, headers=headers, timeout=10) if request is not None else None
        except httpx.TransportError:
            return False
        if r is None or r.status_code != 200:
            return False
        seen.add(r.headers["x-request-id"][:8])
    return len(seen) >= WORKERS


def until_both_answer(cluster: RepoCluster, name: str, version: str, row: np.ndarray, started: float, timeout: float) -> float:
    predict = cluster.headers()
    wait_for(lambda: all(answers(r, predict, name, version, row) for r in cluster.replicas), timeout,
             f"{name}:{version} answered by both replicas", every=0.2)
    return time.monotonic() - started


class Traffic:
    """Requests to one model through nginx from a thread, for a canary to judge; counts statuses."""

    def __init__(self, cluster: RepoCluster, name: str, row: np.ndarray) -> None:
        self.url = f"{cluster.url}/v2/models/{name}/infer"
        self.headers = cluster.headers()
        self.body = body(cluster.url, self.headers, name, row)
        self.statuses: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = np.random.default_rng(0)
        data = self.body["inputs"][0]["data"]
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                self.body["inputs"][0]["data"] = [v + float(rng.normal(0, 0.01)) for v in data]  # no cache hits:
                try:  # the canary judges latency on requests the model answered
                    self.statuses[client.post(self.url, json=self.body, headers=self.headers).status_code] += 1
                except httpx.TransportError:
                    self.statuses[0] += 1
                time.sleep(0.02)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_deploy_through_a_served_by_b_and_an_outage_during_a_pull(repo_cluster, digits, tmp_path):
    cluster = repo_cluster
    a, b = cluster.replicas
    rows, expected = digits
    admin = cluster.headers(scopes="admin")
    name, big = f"repo-{uuid.uuid4().hex[:6]}", f"big-{uuid.uuid4().hex[:6]}"
    small = iris_skops(tmp_path)
    big_row = np.full(BIG_FEATURES, 0.01, dtype=np.float32)
    with SteadyLoad(cluster.url, cluster.headers(), rows, expected, rate=40, clients=2) as load:
        load.wait_for_answers(20)

        # A small model deployed through A is served by B, from B's own store.
        started = deploy(cluster, name, "v1", small.path)
        small_s = until_both_answer(cluster, name, "v1", small.x[0], started, 120)
        print(f"\nsmall model: deploy until both replicas answer {small_s:.1f} s", flush=True)
        for replica in (a, b):
            assert (replica.home / "models" / name / "v1" / "model.yaml").is_file()

        # A 100 MiB model: deploy until both answer.
        started = deploy(cluster, big, "v1", big_onnx(tmp_path, 1))
        big_s = until_both_answer(cluster, big, "v1", big_row, started, 300)
        print(f"100 MiB model: deploy until both replicas answer {big_s:.1f} s", flush=True)

        # Object storage stopped in the middle of a pull: nothing half installed, then the pull recovers.
        import_model(big, "v2", big_onnx(tmp_path, 2), ImportOptions(), ImportSettings())
        cluster.remote.push(f"{big}:v2")
        loader = threading.Thread(target=lambda: httpx.post(f"{a.url}/admin/models/{big}/versions/v2/load",
                                                            headers=admin, timeout=30))
        loader.start()
        staging = [r.home / "rtserve-pulls" for r in (a, b)]
        wait_for(lambda: any(f.is_file() and f.stat().st_size > 0 for s in staging if s.exists()
                             for f in s.rglob("*.onnx")), 60, "a pull under way", every=0.01)
        cluster.s3.stop()
        outage = time.monotonic()
        loader.join()
        waiting = wait_for(lambda: [v.get("waiting") for r in (a, b) for v in [httpx.get(
            f"{r.url}/admin/models", headers=admin, timeout=10).json().get(big, {}).get("versions", {}).get("v2", {})]
            if v.get("waiting") and "attempt" in v.get("waiting")], 60, "a replica saying it waits for the pull")
        for replica in (a, b):
            assert not (replica.home / "models" / big / "v2").exists(), "half-installed while the storage is down"
        cluster.s3.start()
        recovered = until_both_answer(cluster, big, "v2", big_row, outage, 300)
        for replica in (a, b):
            assert (replica.home / "models" / big / "v2" / "model.yaml").is_file()
            assert not [p for p in (replica.home / "rtserve-pulls").iterdir() if p.is_dir()]
        load.wait_for_answers(20)
    s = load.summary()
    print(f"storage stopped mid-pull: both replicas answered {recovered:.1f} s after the outage began "
          f"(shown meanwhile: {waiting[0]!r})")
    print(f"steady load through nginx: sent {s.sent} ok {s.ok} failed {s.failed} lost {s.lost} wrong {s.wrong} {s.by_status}")
    assert (s.failed, s.lost, s.wrong) == (0, 0, 0), s.by_status


def test_the_next_version_canaries_and_promotes_on_both_replicas(repo_cluster, tmp_path):
    cluster = repo_cluster
    a, b = cluster.replicas
    admin = cluster.headers(scopes="admin")
    name = f"canary-{uuid.uuid4().hex[:6]}"
    small = iris_skops(tmp_path)
    deploy(cluster, name, "v1", small.path)
    until_both_answer(cluster, name, "v1", small.x[0], time.monotonic(), 120)
    deploy(cluster, name, "v2", small.path)
    until_both_answer(cluster, name, "v2", small.x[0], time.monotonic(), 120)
    canary = {"version": "v2", "stable": "v1", "steps": [50, 100], "hold_s": 1, "min_requests": 20}
    with Traffic(cluster, name, small.x[0]) as traffic:
        r = httpx.post(f"{a.url}/admin/models/{name}/canary", json=canary, headers=admin, timeout=10)
        assert r.status_code == 201, r.text
        last: dict = {}

        def decided() -> dict | None:
            last.update(httpx.get(f"{b.url}/admin/models/{name}/canary", headers=admin, timeout=10).json())
            return dict(last) if last["status"] != "running" else None

        try:
            doc = wait_for(decided, 120, "the canary decided", every=0.2)
        finally:
            print(f"\ncanary: {last}; its traffic through nginx {dict(traffic.statuses)}", flush=True)
    assert doc["status"] == "promoted", doc
    for replica in (a, b):
        weights = httpx.get(f"{replica.url}/admin/models", headers=admin, timeout=10).json()[name]["weights"]
        assert weights.get("v2") == 100.0, weights
