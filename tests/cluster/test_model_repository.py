"""Two replicas with a model store each and one model repository (SeaweedFS), behind nginx, under a steady
load through nginx: a version deployed with `rtserve deploy` through replica A is served by B, its next
version canaries (`rtserve canary start`) and promotes on both, object storage stopped in the middle of a
pull leaves no half-installed version and the pull recovers, and no request is lost through all of it.
The module ends with one block of what it measured."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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

from deploy.objectstore import SeaweedFS
from models.remote import ModelRepositorySettings, ObjectRepository
from tests.cluster.conftest import WORKERS, Cluster, running_cluster
from tests.faults.load import SteadyLoad, wait_for
from tests.helpers import ServerProcess
from tests.models.makers import iris_skops

pytestmark = pytest.mark.timeout(1200)  # two replicas' start, a 100 MiB model twice, storage restarted

BIG_FEATURES = 5120
"""A 5120 x 5120 float32 weight: a 100 MiB model."""
RTSERVE = str(Path(sys.executable).parent / "rtserve")


@dataclass
class RepoCluster:
    cluster: Cluster
    s3: SeaweedFS
    remote: ObjectRepository
    """The repository the replicas push to and pull from, read by the test to check what they installed."""


@pytest.fixture(scope="module")
def repo_cluster(model_store, tmp_path_factory) -> Iterator[RepoCluster]:
    tmp = tmp_path_factory.mktemp("repo-cluster")
    s3 = SeaweedFS(tmp / "seaweedfs").start()
    s3_env = s3.env(f"s3://models/{uuid.uuid4().hex[:8]}")
    remote = ObjectRepository(ModelRepositorySettings(
        url=s3_env["RTSERVE_MODEL_REPOSITORY"], endpoint_url=s3.endpoint, access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
        secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"], region="us-east-1"))
    env = {**s3_env, "RTSERVE_MODEL_REPOSITORY_BACKOFF_S": "0.2", "RTSERVE_MODEL_REPOSITORY_BACKOFF_MAX_S": "1",
           "RTSERVE_MODEL_REPOSITORY_TIMEOUT_S": "3", "RTSERVE_ROUTING_READINESS_SCOPE": "configured"}
    try:
        with running_cluster(tmp, env, own_store=True, label="rtserve-repo-cluster") as cluster:
            yield RepoCluster(cluster, s3, remote)
    finally:
        s3.stop()


@pytest.fixture(scope="module")
def measured() -> Iterator[dict[str, str]]:
    """What the module measured, printed as one block when it ends (whatever passed or failed)."""
    lines: dict[str, str] = {}
    yield lines
    width = max((len(k) for k in lines), default=0)
    print("\n--- model repository cluster test (2 replicas x 2 workers, own stores, SeaweedFS, nginx) ---\n"
          + "\n".join(f"{k:<{width}}  {v}" for k, v in lines.items()) + "\n---", flush=True)


@pytest.fixture(scope="module")
def load(repo_cluster, digits) -> Iterator[SteadyLoad]:
    """digits-sklearn through nginx, 40 requests/s, from before the first deploy until the last test."""
    rows, expected = digits
    cluster = repo_cluster.cluster
    with SteadyLoad(cluster.url, cluster.headers(), rows, expected, rate=40, clients=2) as steady:
        steady.wait_for_answers(20)
        yield steady


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


def rtserve(cluster: Cluster, replica: ServerProcess, *args: str, timeout: float = 900) -> str:
    """`rtserve ARGS` as an operator runs it: a process of its own against one replica, with an admin token."""
    token = cluster.headers(scopes="admin predict", tenant="admin", sub="operator")["Authorization"].removeprefix("Bearer ")
    env = {**os.environ, "RTSERVE_URL": replica.url, "RTSERVE_TOKEN": token}
    done = subprocess.run([RTSERVE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"rtserve {' '.join(args)}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    return done.stdout


@dataclass
class Deploy:
    """One `rtserve deploy` through replica A, timed from the command's start."""

    started: float
    command_s: float = 0.0
    """Until the command answered: upload, import with its probe, push to the repository, loaded by A's workers."""
    output: str = ""

    @classmethod
    def run(cls, cluster: Cluster, name: str, version: str, source: Path) -> Deploy:
        deploy = cls(time.monotonic())
        deploy.output = rtserve(cluster, cluster.replicas[0], "deploy", name, str(source), "--version", version)
        deploy.command_s = time.monotonic() - deploy.started
        return deploy

    def describe(self, both_s: float) -> str:
        """The command's seconds, the server's split of them, and `both_s` (from the command's start)."""
        server = re.search(r"import ([\d.]+) s, load ([\d.]+) s", self.output)
        split = f" (import {server[1]} s, load in A {server[2]} s)" if server else ""
        return f"deploy command {self.command_s:.1f} s{split}; both replicas answer {both_s:.1f} s after it started"


def installed_as_pushed(rc: RepoCluster, name: str, version: str, replicas: list[ServerProcess]) -> None:
    """Each replica's store holds exactly the files and hashes of the repository's manifest."""
    manifest = rc.remote.manifest(name, version)
    assert manifest is not None, f"{name}:{version} is not in the repository"
    for replica in replicas:
        manifest.check(replica.home / "models" / name / version)


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


def serves(replica: ServerProcess, admin: dict[str, str], predict: dict[str, str], name: str, version: str,
           row: np.ndarray) -> bool:
    """Whether the replica's index says every one of its workers serves NAME:VERSION, and it answers a request."""
    try:
        index = httpx.post(f"{replica.url}/v2/repository/index", json={"ready": True}, headers=admin, timeout=10)
        if not any(e["name"] == name and e["version"] == version for e in index.json()):
            return False
        request = body(replica.url, predict, name, row)
        if request is None:
            return False
        r = httpx.post(f"{replica.url}/v2/models/{name}/versions/{version}/infer", json=request, headers=predict, timeout=10)
    except httpx.TransportError:
        return False
    return r.status_code == 200


def until_both_answer(cluster: Cluster, name: str, version: str, row: np.ndarray, started: float, timeout: float) -> float:
    """Seconds from `started` until both replicas serve NAME:VERSION in every worker and answer it: polled with
    two requests a replica, so the time is the replicas' and not the polling's; then each worker of both is
    seen answering (untimed)."""
    admin, predict = cluster.headers(scopes="admin"), cluster.headers()
    pending = set(range(len(cluster.replicas)))

    def both() -> bool:
        pending.difference_update({i for i in pending if serves(cluster.replicas[i], admin, predict, name, version, row)})
        return not pending

    wait_for(both, timeout, f"{name}:{version} served by both replicas", every=0.1)
    took = time.monotonic() - started
    wait_for(lambda: all(answers(r, predict, name, version, row) for r in cluster.replicas), 120,
             f"{name}:{version} answered by every worker of both replicas", every=0.2)
    return took


class Traffic:
    """Requests to one model through nginx from a thread, for a canary to judge; counts statuses."""

    def __init__(self, cluster: Cluster, name: str, row: np.ndarray) -> None:
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


def test_deploy_through_a_served_by_b(repo_cluster, load, measured, tmp_path):
    cluster = repo_cluster.cluster
    a, b = cluster.replicas
    name, big = f"repo-{uuid.uuid4().hex[:6]}", f"big-{uuid.uuid4().hex[:6]}"
    small = iris_skops(tmp_path)

    # A small model deployed through A is served by B, pulled into B's own store.
    deploy = Deploy.run(cluster, name, "v1", small.path)
    measured["small model (skops, 4 KB)"] = deploy.describe(until_both_answer(cluster, name, "v1", small.x[0], deploy.started, 120))
    installed_as_pushed(repo_cluster, name, "v1", [a, b])

    # A 100 MiB model: deploy until both answer.
    source = big_onnx(tmp_path, 1)
    deploy = Deploy.run(cluster, big, "v1", source)
    both = until_both_answer(cluster, big, "v1", np.full(BIG_FEATURES, 0.01, dtype=np.float32), deploy.started, 300)
    measured[f"100 MiB model (ONNX, {source.stat().st_size / 2**20:.0f} MiB)"] = deploy.describe(both)
    installed_as_pushed(repo_cluster, big, "v1", [a, b])


def test_an_object_storage_outage_during_a_pull(repo_cluster, load, measured, tmp_path):
    """A 100 MiB model deployed through A; the storage stops while B downloads it, then comes back."""
    cluster = repo_cluster.cluster
    a, b = cluster.replicas
    admin = cluster.headers(scopes="admin")
    big = f"outage-{uuid.uuid4().hex[:6]}"
    source = big_onnx(tmp_path, 2)
    deployed: list[Deploy] = []
    deployer = threading.Thread(target=lambda: deployed.append(Deploy.run(cluster, big, "v1", source)))
    deployer.start()
    staging = b.home / "rtserve-pulls"
    wait_for(lambda: staging.exists() and any(f.is_file() and f.stat().st_size > 0 for f in staging.rglob("*.onnx")),
             300, "B's pull under way", every=0.01)
    repo_cluster.s3.stop()
    outage = time.monotonic()
    deployer.join()  # A serves the version from the upload: once pushed, its deploy no longer needs the storage
    assert deployed, "the deploy through A failed while the storage was down"

    def waiting() -> str | None:
        doc = httpx.get(f"{b.url}/admin/models", headers=admin, timeout=10).json()
        version = doc.get(big, {}).get("versions", {}).get("v1", {})
        return version.get("waiting") if "attempt" in (version.get("waiting") or "") else None

    shown = wait_for(waiting, 60, "B saying it waits for the pull")
    assert not (b.home / "models" / big / "v1").exists(), "half-installed while the storage is down"
    down_s = time.monotonic() - outage
    restarted = time.monotonic()
    repo_cluster.s3.start()
    restart_s = time.monotonic() - restarted
    recovered = until_both_answer(cluster, big, "v1", np.full(BIG_FEATURES, 0.01, dtype=np.float32), outage, 300)
    installed_as_pushed(repo_cluster, big, "v1", [a, b])
    assert not [p for p in staging.iterdir() if p.is_dir()], "a staging folder was left behind"
    measured["storage stopped during B's 100 MiB pull"] = (
        f"B said it waits {down_s:.1f} s after the stop, SeaweedFS took {restart_s:.1f} s to come back, both replicas "
        f"answer {recovered:.1f} s after the stop; B showed: {shown!r}")


def test_the_next_version_canaries_and_promotes_on_both_replicas(repo_cluster, load, measured, tmp_path):
    cluster = repo_cluster.cluster
    a, b = cluster.replicas
    admin = cluster.headers(scopes="admin")
    name = f"canary-{uuid.uuid4().hex[:6]}"
    small = iris_skops(tmp_path)
    for version in ("v1", "v2"):
        deploy = Deploy.run(cluster, name, version, small.path)
        until_both_answer(cluster, name, version, small.x[0], deploy.started, 120)
    with Traffic(cluster, name, small.x[0]) as traffic:
        started = time.monotonic()
        # v2 is v1's very file, so any difference in p95 is the machine's: on shared, loaded cores the p95 of a
        # few dozen requests moves by tens of milliseconds (49.5 vs 25.0 ms seen), which the default 2 ms slack
        # judges as a slow canary. Judging latency is tests/routing/test_canary.py's; here errors are judged.
        rtserve(cluster, b, "canary", "start", name, "v2", "--stable", "v1", "--steps", "50,100", "--hold", "1",
                "--min-requests", "20", "--p95-slack-ms", "1000")
        last: dict = {}

        def decided() -> dict | None:
            last.update(httpx.get(f"{a.url}/admin/models/{name}/canary", headers=admin, timeout=10).json())
            return dict(last) if last["status"] != "running" else None

        try:
            doc = wait_for(decided, 120, "the canary decided", every=0.2)
            decided_s = time.monotonic() - started
        finally:
            measured["canary traffic through nginx"] = f"statuses {dict(sorted(traffic.statuses.items()))}"
    assert doc["status"] == "promoted", doc
    for replica in (a, b):
        weights = httpx.get(f"{replica.url}/admin/models", headers=admin, timeout=10).json()[name]["weights"]
        assert weights.get("v2") == 100.0, weights
    steps = "; ".join(f"{d['action']} at {d['weight']:g} %" for d in doc["decisions"])
    measured["canary v1 -> v2 (started through B)"] = (f"{doc['status']} {decided_s:.1f} s after `rtserve canary start` "
                                                       f"({steps}); v2 at 100 % on both replicas")
    assert set(traffic.statuses) == {200}, traffic.statuses


def test_no_request_lost_through_all_of_it(load, measured):
    load.wait_for_answers(20)
    s = load.summary()
    measured["steady load through nginx (digits)"] = (f"sent {s.sent} ok {s.ok} failed {s.failed} lost {s.lost} "
                                                      f"wrong {s.wrong} {s.by_status}")
    assert (s.failed, s.lost, s.wrong) == (0, 0, 0), s.by_status
