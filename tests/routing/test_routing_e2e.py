"""Routing through real servers: two workers on Redis agree on weights, sticky experiments,
canaries that promote and roll back by themselves, and zero failed requests through a full
load -> canary -> promote -> unload cycle."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest

from tests.routing.broken import build_broken_versions

INFER = "/v2/models/{}/infer"


def body(model: str, seed: int) -> dict:
    row = np.random.default_rng(seed).integers(0, 17, 64).astype(float)
    shape = [1, 1, 8, 8] if model in ("digits-torch", "digits-onnx") else [1, 64]
    return {"inputs": [{"name": "pixels", "shape": shape, "datatype": "FP32", "data": row.tolist()}]}


def admin(gateway, method: str, path: str, json=None) -> httpx.Response:
    return httpx.request(method, gateway.url + path, json=json, headers=gateway.headers(scopes="admin"), timeout=30)


def wait_for(predicate, timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


@dataclass
class Load:
    """A client sending requests without a version, recording every answer, until stopped."""

    gateway: object
    model: str
    fresh_connections: bool = False  # a new connection per request lands on either worker
    results: list[tuple[float, int, str]] = field(default_factory=list)  # (start time, status, version)
    stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Load:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)

    def _run(self) -> None:
        headers = self.gateway.headers(ttl=3600)
        i = 0
        limits = httpx.Limits(max_keepalive_connections=0) if self.fresh_connections else httpx.Limits()
        with httpx.Client(base_url=self.gateway.url, headers=headers, timeout=30, limits=limits) as client:
            while not self.stop.is_set():
                i += 1
                started = time.time()
                try:
                    r = client.post(INFER.format(self.model), json=body(self.model, i))
                    self.results.append((started, r.status_code, r.headers.get("x-model-version", "")))
                except httpx.HTTPError:
                    self.results.append((started, 0, ""))

    def failures(self) -> list[tuple[float, int, str]]:
        return [r for r in self.results if r[1] != 200]


@pytest.fixture(scope="module")
def broken_versions(model_store):
    build_broken_versions()


def weights(gateway, model: str) -> dict[str, float]:
    return admin(gateway, "GET", "/admin/models").json()[model]["weights"]


def test_two_workers_apply_a_weight_change_within_a_second(gateway):
    """Clients on fresh connections (so both workers answer) record when each request started."""
    with Load(gateway, "digits-onnx", fresh_connections=True) as a, Load(gateway, "digits-onnx", fresh_connections=True) as b:
        time.sleep(1.0)
        asked = time.time()
        assert admin(gateway, "PUT", "/admin/models/digits-onnx/weights", {"weights": {"v1": 0, "v2": 100}}).status_code == 200
        changed = time.time()
        time.sleep(2.5)
    results = a.results + b.results
    late_v1 = [t for t, _, v in results if v == "v1" and t > changed + 1.0]
    assert {v for t, _, v in results if t < asked} == {"v1"}
    assert not late_v1, f"{len(late_v1)} requests started over a second after the change still went to v1"
    assert [v for t, _, v in results if t > changed + 1.0].count("v2") > 10
    assert admin(gateway, "PUT", "/admin/models/digits-onnx/weights", {"weights": {"v1": 100}}).status_code == 200


def test_weights_refuse_versions_that_are_not_loaded(gateway):
    r = admin(gateway, "PUT", "/admin/models/digits-onnx/weights", {"weights": {"v9": 100}})
    assert r.status_code == 409 and r.json()["code"] == "conflict"
    assert admin(gateway, "PUT", "/admin/models/digits-onnx/weights", {"weights": {"v1": -5}}).status_code in (409, 422)


def test_admin_needs_the_admin_scope(gateway):
    r = httpx.get(gateway.url + "/admin/models", headers=gateway.headers(scopes="predict"))
    assert r.status_code == 403
    assert httpx.get(gateway.url + "/admin/models").status_code == 401


def test_sticky_experiment_holds_weights_over_many_users(gateway):
    r = admin(gateway, "POST", "/admin/models/digits-ensemble/experiment",
              {"name": "ens-ab", "variants": {"v1": 70, "v2": 30}, "control": "v1", "mirror_fraction": 0.5})
    assert r.status_code == 201, r.text
    try:
        users = 300
        seen: dict[str, set[str]] = {}
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            for u in range(users):
                headers = gateway.headers(sub=f"user-{u}")
                for rep in range(2):
                    resp = client.post(INFER.format("digits-ensemble"), json=body("digits-ensemble", u * 10 + rep), headers=headers)
                    assert resp.status_code == 200
                    seen.setdefault(f"user-{u}", set()).add(resp.headers["x-model-version"])
        assert all(len(v) == 1 for v in seen.values()), "a user saw two versions"
        share = sum(v == {"v2"} for v in seen.values()) / users
        assert abs(share - 0.3) < 4 * (0.3 * 0.7 / users) ** 0.5  # within four standard deviations
        summary = wait_for(lambda: (s := admin(gateway, "GET", "/admin/models/digits-ensemble/experiment").json())
                           ["summary"]["v2"]["agreement_with_control"] is not None and s, 10, "mirrored comparisons")
        assert summary["summary"]["v1"]["requests"] > 0 and summary["summary"]["v2"]["p95_ms"] > 0
        assert 0.5 <= summary["summary"]["v2"]["agreement_with_control"] <= 1.0  # two good models mostly agree
    finally:
        assert admin(gateway, "DELETE", "/admin/models/digits-ensemble/experiment").status_code == 200


def test_canary_of_a_broken_version_rolls_back_by_itself(gateway, broken_versions):
    assert admin(gateway, "POST", "/admin/models/digits-sklearn/versions/broken/load").status_code == 200
    wait_for(lambda: httpx.get(gateway.url + "/v2/models/digits-sklearn/versions/broken/ready", headers=gateway.headers()).status_code == 200, 60, "broken loaded")
    with Load(gateway, "digits-sklearn") as load:
        time.sleep(0.5)
        r = admin(gateway, "POST", "/admin/models/digits-sklearn/canary",
                  {"version": "broken", "steps": [20, 50, 100], "hold_s": 2, "min_requests": 20})
        assert r.status_code == 201, r.text
        status = wait_for(lambda: (s := admin(gateway, "GET", "/admin/models/digits-sklearn/canary").json())["status"] != "running" and s,
                          60, "the rollback")
        time.sleep(1.5)  # every worker has applied it by now
        tail_start = time.time()
        time.sleep(1.0)
    assert status["status"] == "rolled_back" and status["weights"] == {"v1": 100.0}
    rollback = next(d for d in status["decisions"] if d["action"] == "rollback")
    first_error = min(t for t, code, _ in load.results if code >= 500)
    print(f"\nbroken canary: first error to 0 % traffic {rollback['at'] - first_error:.2f} s; reason: {rollback['reason']}")
    assert rollback["at"] - first_error < 10
    assert not [r for r in load.results if r[0] > tail_start and r[1] != 200], "errors after the rollback"
    # The rolled-back version is drained and unloaded.
    wait_for(lambda: httpx.get(gateway.url + "/v2/models/digits-sklearn/versions/broken/ready", headers=gateway.headers()).status_code == 404, 10, "unload")
    # The audit log (a Redis stream) says who did what: the admin started it, the system rolled it back.
    audit = admin(gateway, "GET", "/admin/audit?model=digits-sklearn&limit=20").json()
    started = next(e for e in audit if e["action"] == "canary_start")
    rolled_back = next(e for e in audit if e["action"] == "canary_rollback")
    assert (started["who"], started["tenant"], rolled_back["who"]) == ("alice", "acme", "system"), audit
    assert rolled_back["changes"]["weights"]["to"] == {"v1": 100.0} and rolled_back["detail"] == rollback["reason"]


def test_canary_of_a_slow_version_rolls_back_by_itself(gateway, broken_versions):
    assert admin(gateway, "POST", "/admin/models/digits-sklearn/versions/slow/load").status_code == 200
    wait_for(lambda: httpx.get(gateway.url + "/v2/models/digits-sklearn/versions/slow/ready", headers=gateway.headers()).status_code == 200, 60, "slow loaded")
    with Load(gateway, "digits-sklearn") as load:
        r = admin(gateway, "POST", "/admin/models/digits-sklearn/canary",
                  {"version": "slow", "steps": [30, 100], "hold_s": 2, "min_requests": 20})
        assert r.status_code == 201, r.text
        status = wait_for(lambda: (s := admin(gateway, "GET", "/admin/models/digits-sklearn/canary").json())["status"] != "running" and s,
                          60, "the rollback")
    assert status["status"] == "rolled_back", status
    assert "p95" in next(d for d in status["decisions"] if d["action"] == "rollback")["reason"]
    assert not load.failures()  # slow is not failed: every request still answered


def test_zero_failed_requests_through_load_canary_promote_unload(gateway):
    model = "digits-torch"
    with Load(gateway, model) as load:
        time.sleep(0.5)
        assert admin(gateway, "POST", f"/admin/models/{model}/versions/v2/unload").status_code == 202
        wait_for(lambda: httpx.get(gateway.url + f"/v2/models/{model}/versions/v2/ready", headers=gateway.headers()).status_code == 404, 20, "v2 unloaded")
        assert admin(gateway, "POST", f"/admin/models/{model}/versions/v2/load").status_code == 200
        wait_for(lambda: httpx.get(gateway.url + f"/v2/models/{model}/versions/v2/ready", headers=gateway.headers()).status_code == 200, 60, "v2 loaded")
        time.sleep(1.0)  # both workers have it
        # A good version on a busy, shared machine: enough requests per step for a stable p95, and
        # latency slack for scheduling noise; the slow-version test keeps the default slack.
        r = admin(gateway, "POST", f"/admin/models/{model}/canary", {"version": "v2", "steps": [50, 100], "hold_s": 1,
                                                                     "min_requests": 100, "thresholds": {"p95_slack_ms": 25}})
        assert r.status_code == 201, r.text
        status = wait_for(lambda: (s := admin(gateway, "GET", f"/admin/models/{model}/canary").json())["status"] != "running" and s,
                          90, "the canary to finish")
        assert status["status"] == "promoted", [(d["action"], d["reason"]) for d in status["decisions"]]
        wait_for(lambda: httpx.get(gateway.url + f"/v2/models/{model}/versions/v1/ready", headers=gateway.headers()).status_code == 404, 20, "v1 unloaded")
        time.sleep(1.0)
    versions = {v for _, _, v in load.results}
    print(f"\nzero-downtime cycle: {len(load.results)} requests, {len(load.failures())} failed, versions {sorted(versions)}")
    assert len(load.results) > 100
    assert load.failures() == []
    assert versions == {"v1", "v2"}
    assert weights(gateway, model) == {"v2": 100.0}
