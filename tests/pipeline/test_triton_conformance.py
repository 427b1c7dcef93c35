"""Each extension the server metadata names, walked with the official client (tritonclient.http) against the
session's production-shaped server (two workers, Redis, auth): model repository, statistics, schedule policy.
It works on digits-torch:v2-int8, which takes no traffic and no other test changes, and leaves it loaded."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from demo import data
from frontends.oip_routes import EXTENSIONS

MODEL, VERSION = "digits-torch", "v2-int8"


@pytest.fixture(scope="module")
def server(gateway) -> tuple[object, dict[str, str]]:
    return gateway.server, gateway.headers(scopes="predict admin")


@pytest.fixture(scope="module")
def client(server) -> Iterator[triton.InferenceServerClient]:
    proc, _ = server
    c = triton.InferenceServerClient(proc.url.removeprefix("http://"), network_timeout=30.0)
    try:
        yield c
    finally:
        c.close()


def pixels(rows: int, start: int = 0) -> triton.InferInput:
    x = data.digits().x_test[start : start + rows].astype(np.float32).reshape(rows, 1, 8, 8)
    inp = triton.InferInput("pixels", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def row(value: float) -> dict:
    return {"inputs": [{"name": "pixels", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [value] * 64}]}


def test_server_metadata_names_exactly_what_is_implemented(client, server):
    assert client.get_server_metadata(headers=dict(server[1]))["extensions"] == EXTENSIONS
    assert {"model_repository", "statistics", "schedule_policy"} <= set(EXTENSIONS)


def test_model_repository_index_unload_and_load(client, server):
    proc, headers = server
    index = {(e["name"], e["version"]): e for e in client.get_model_repository_index(headers=dict(headers))}
    assert index[MODEL, VERSION]["state"] == "READY"
    assert {name for name, _ in index} == {"digits-sklearn", "digits-torch", "digits-onnx", "digits-ensemble", "seq-torch"}

    client.unload_model(MODEL, headers=dict(headers), query_params={"version": VERSION})
    index = {(e["name"], e["version"]): e for e in client.get_model_repository_index(headers=dict(headers))}
    assert (index[MODEL, VERSION]["state"], index[MODEL, VERSION]["reason"]) == ("UNAVAILABLE", "unloaded")
    with pytest.raises(InferenceServerException, match=VERSION):
        client.infer(MODEL, [pixels(1)], model_version=VERSION, headers=dict(headers))

    client.load_model(MODEL, headers=dict(headers), config=json.dumps({"version_policy": {"specific": {"versions": [VERSION]}}}))
    # Done in every worker when the call returns: fresh connections, whichever worker takes them, all answer.
    statuses = {httpx.post(f"{proc.url}/v2/models/{MODEL}/versions/{VERSION}/infer", json=row(1.0), headers=headers,
                           timeout=30).status_code for _ in range(12)}
    assert statuses == {200}
    assert client.is_model_ready(MODEL, VERSION, headers=dict(headers))
    index = {(e["name"], e["version"]): e for e in client.get_model_repository_index(headers=dict(headers))}
    assert (index[MODEL, VERSION]["state"], index[MODEL, VERSION]["reason"]) == ("READY", "")

    with pytest.raises(InferenceServerException, match="keeps at least one version"):
        client.unload_model(MODEL, headers=dict(headers))


def test_schedule_policy_priority_and_timeout(client, server, gateway):
    headers = server[1]  # tritonclient adds its own headers to the dict it is given: each call gets a copy
    with pytest.raises(InferenceServerException, match="priority 1 is not allowed"):  # a per-tier permission
        client.infer(MODEL, [pixels(2)], model_version=VERSION, headers=dict(headers), priority=1)
    gold = gateway.headers(tenant="gold-tenant")  # its tier may ask for level 1
    result = client.infer(MODEL, [pixels(2)], model_version=VERSION, headers=dict(gold), priority=1, timeout=10_000_000)
    assert result.as_numpy("label").shape == (2,)
    low = client.infer(MODEL, [pixels(2)], model_version=VERSION, headers=dict(headers), priority=3)
    np.testing.assert_array_equal(low.as_numpy("label"), result.as_numpy("label"))
    with pytest.raises(InferenceServerException, match="deadline"):  # 1 µs: past before it reaches the queue
        client.infer(MODEL, [pixels(1, 7)], model_version=VERSION, headers=dict(headers), timeout=1)


def test_statistics_sum_every_worker(client, server):
    proc, headers = server
    before = client.get_inference_statistics(MODEL, VERSION, headers=dict(headers))["model_stats"][0]
    for i in range(6):  # on fresh connections, so both workers answer some
        r = httpx.post(f"{proc.url}/v2/models/{MODEL}/versions/{VERSION}/infer", json=row(float(i + 2)), headers=headers, timeout=30)
        assert r.status_code == 200, r.text
    for _ in range(2):  # the same input twice on the client's one connection: the second is a cache hit
        client.infer(MODEL, [pixels(1, 40)], model_version=VERSION, headers=dict(headers))
    after = client.get_inference_statistics(MODEL, VERSION, headers=dict(headers))["model_stats"][0]

    was, now = before["inference_stats"], after["inference_stats"]
    assert now["success"]["count"] - was["success"]["count"] == 8
    hits = now["cache_hit"]["count"] - was["cache_hit"]["count"]
    misses = now["cache_miss"]["count"] - was["cache_miss"]["count"]
    assert hits >= 1 and hits + misses == 8
    assert after["inference_count"] - before["inference_count"] == misses  # one row each, a hit runs nothing
    assert now["queue"]["count"] - was["queue"]["count"] == misses
    assert after["last_inference"] >= before["last_inference"] > 0
    every = client.get_inference_statistics(headers=dict(headers))["model_stats"]
    assert {("digits-sklearn", "v1"), (MODEL, VERSION)} <= {(s["name"], s["version"]) for s in every}
