"""Each extension the server metadata names, walked with the official client (tritonclient.http) against a
real `bentoml serve` with two workers: model repository, statistics, schedule policy."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from frontends.rest import EXTENSIONS
from gateway.auth import AuthSettings
from gateway.tokens import mint
from models import data
from tests.helpers import ServerProcess

CONFIG = """
models:
  digits-sklearn:
    versions: [v1, v2]
    weights: {v1: 100}
"""


@pytest.fixture(scope="module")
def server(model_store, tmp_path_factory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("triton-conformance")
    (tmp / "serving.yaml").write_text(CONFIG)
    (tmp / "jwt-secret").write_text(secrets.token_hex(32))
    proc = ServerProcess(
        env={"REDIS_URL": "", "RTSERVE_WORKERS": "2", "RTSERVE_CONFIG": str(tmp / "serving.yaml"), "RTSERVE_AUTH_ENABLED": "true",
             "RTSERVE_AUTH_HS256_SECRET_FILE": str(tmp / "jwt-secret")},
        log_path=tmp / "serve.log",
    )
    token = mint(AuthSettings(hs256_secret_file=tmp / "jwt-secret"), subject="ops", scopes="predict admin", tenant="acme", ttl_s=600)
    try:
        yield proc.start(), {"Authorization": f"Bearer {token}"}
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def client(server) -> Iterator[triton.InferenceServerClient]:
    proc, _ = server
    c = triton.InferenceServerClient(proc.url.removeprefix("http://"), network_timeout=30.0)
    try:
        yield c
    finally:
        c.close()


def pixels(rows: int, start: int = 0) -> triton.InferInput:
    x = data.digits().x_test[start : start + rows].astype(np.float32)
    inp = triton.InferInput("pixels", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def test_server_metadata_names_exactly_what_is_implemented(client, server):
    assert client.get_server_metadata(headers=dict(server[1]))["extensions"] == EXTENSIONS
    assert {"model_repository", "statistics", "schedule_policy"} <= set(EXTENSIONS)


def test_model_repository_index_unload_and_load(client, server):
    proc, headers = server
    index = {(e["name"], e["version"]): e for e in client.get_model_repository_index(headers=dict(headers))}
    assert index["digits-sklearn", "v1"]["state"] == index["digits-sklearn", "v2"]["state"] == "READY"
    assert {"digits-onnx", "seq-torch"}.isdisjoint(name for name, _ in index)  # only served models

    client.unload_model("digits-sklearn", headers=dict(headers), query_params={"version": "v2"})
    index = {(e["name"], e["version"]): e for e in client.get_model_repository_index(headers=dict(headers))}
    assert (index["digits-sklearn", "v2"]["state"], index["digits-sklearn", "v2"]["reason"]) == ("UNAVAILABLE", "unloaded")
    with pytest.raises(InferenceServerException, match="v2"):
        client.infer("digits-sklearn", [pixels(1)], model_version="v2", headers=dict(headers))

    client.load_model("digits-sklearn", headers=dict(headers), config=json.dumps({"version_policy": {"specific": {"versions": ["v2"]}}}))
    # Done in every worker when the call returns: fresh connections, whichever worker takes them, all answer.
    body = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [1.0] * 64}]}
    statuses = {httpx.post(f"{proc.url}/v2/models/digits-sklearn/versions/v2/infer", json=body, headers=headers, timeout=30).status_code
                for _ in range(12)}
    assert statuses == {200}
    assert client.is_model_ready("digits-sklearn", "v2", headers=dict(headers))
    ready = client.get_model_repository_index(headers=dict(headers))
    assert all(e["state"] == "READY" and e["reason"] == "" for e in ready)

    with pytest.raises(InferenceServerException, match="keeps at least one version"):
        client.unload_model("digits-sklearn", headers=dict(headers))


def test_schedule_policy_priority_and_timeout(client, server):
    headers = server[1]  # tritonclient adds its own headers to the dict it is given: each call gets a copy
    result = client.infer("digits-sklearn", [pixels(2)], model_version="v1", headers=dict(headers), priority=1, timeout=10_000_000)
    assert result.as_numpy("label").shape == (2,)
    low = client.infer("digits-sklearn", [pixels(2)], model_version="v1", headers=dict(headers), priority=3)
    np.testing.assert_array_equal(low.as_numpy("label"), result.as_numpy("label"))
    with pytest.raises(InferenceServerException, match="deadline"):  # 1 µs: past before it reaches the queue
        client.infer("digits-sklearn", [pixels(1, 7)], model_version="v1", headers=dict(headers), timeout=1)


def test_statistics_sum_every_worker(client, server):
    proc, headers = server
    before = client.get_inference_statistics("digits-sklearn", "v1", headers=dict(headers))["model_stats"][0]
    for i in range(6):  # on fresh connections, so both workers answer some
        body = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [float(i % 17)] * 64}]}
        assert httpx.post(f"{proc.url}/v2/models/digits-sklearn/versions/v1/infer", json=body, headers=headers, timeout=30).status_code == 200
    for _ in range(2):  # the same input twice on the client's one connection: the second is a cache hit
        client.infer("digits-sklearn", [pixels(1, 40)], model_version="v1", headers=dict(headers))
    after = client.get_inference_statistics("digits-sklearn", "v1", headers=dict(headers))["model_stats"][0]

    was, now = before["inference_stats"], after["inference_stats"]
    assert now["success"]["count"] - was["success"]["count"] == 8
    hits = now["cache_hit"]["count"] - was["cache_hit"]["count"]
    misses = now["cache_miss"]["count"] - was["cache_miss"]["count"]
    assert hits >= 1 and hits + misses == 8
    assert after["inference_count"] - before["inference_count"] == misses  # one row each, a hit runs nothing
    assert now["queue"]["count"] - was["queue"]["count"] == misses
    assert after["last_inference"] >= before["last_inference"] > 0
    every = client.get_inference_statistics(headers=dict(headers))["model_stats"]
    assert {(s["name"], s["version"]) for s in every} == {("digits-sklearn", "v1"), ("digits-sklearn", "v2")}
