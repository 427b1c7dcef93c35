"""The served API, through a real `bentoml serve` process and real HTTP clients."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from demo import data
from runners.loader import load_runner

DIGITS = ["digits-sklearn", "digits-torch", "digits-onnx", "digits-ensemble"]
OPTIMIZED = {"digits-torch": ["v2-int8"], "digits-onnx": ["v2-int8", "v2-opt"]}  # variants serving.yaml loads too


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def tc(server):
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


def pixels(name: str, n: int, start: int = 0) -> np.ndarray:
    shape = load_runner(f"{name}:v1").input_spec.row_shape
    return data.digits().x_test[start : start + n].reshape(n, *shape)


def infer_body(x: np.ndarray, name: str = "pixels", datatype: str = "FP32") -> dict:
    return {"inputs": [{"name": name, "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}]}


def test_server_metadata_and_health(http):
    meta = http.get("/v2").json()
    assert meta["name"] == "rtserve" and "binary_tensor_data" in meta["extensions"]
    assert http.get("/v2/health/live").status_code == 200
    ready = http.get("/v2/health/ready").json()
    assert ready["ready"] is True and set(ready["background"].values()) <= {"ok"}
    assert http.get("/readyz").status_code == 200  # BentoML's own probe agrees


@pytest.mark.parametrize("name", DIGITS + ["seq-torch"])
def test_model_metadata_lists_typeable_versions(http, name):
    meta = http.get(f"/v2/models/{name}").json()
    assert meta["name"] == name
    assert meta["versions"] == (["v1"] if name == "seq-torch" else ["v1", "v2", *OPTIMIZED.get(name, [])])
    assert meta["outputs"][0] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10 if name != "seq-torch" else 4]}
    one = http.get(f"/v2/models/{name}/versions/v1").json()
    assert one["versions"] == ["v1"] and one["inputs"] == meta["inputs"]
    assert http.get(f"/v2/models/{name}/versions/v1/ready").status_code == 200
    assert http.get(f"/v2/models/{name}/ready").json()["ready"] is True


@pytest.mark.parametrize("name", DIGITS)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_served_predictions_equal_direct_predictions(http, name, version):
    x = pixels(name, 12)
    r = http.post(f"/v2/models/{name}/versions/{version}/infer", json=infer_body(x))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_name"] == name and doc["model_version"] == version
    assert r.headers["x-model-version"] == version
    outs = {o["name"]: o for o in doc["outputs"]}
    direct = load_runner(f"{name}:{version}").run(x)
    assert outs["probabilities"]["shape"] == [12, 10]
    np.testing.assert_allclose(np.array(outs["probabilities"]["data"]).reshape(12, 10), direct["probabilities"], rtol=1e-4, atol=1e-6)
    assert outs["label"]["data"] == direct["label"].tolist()


def test_sequence_model_serves_variable_lengths(http):
    x, y = data.sequences(6, seed=21)
    direct = load_runner("seq-torch:v1").run(x)
    r = http.post("/v2/models/seq-torch/infer", json=infer_body(x, "tokens", "INT64"))
    assert r.status_code == 200, r.text
    assert {o["name"]: o for o in r.json()["outputs"]}["label"]["data"] == direct["label"].tolist()


def test_unversioned_request_goes_to_the_routed_version(http):
    r = http.post("/v2/models/digits-sklearn/infer", json=infer_body(pixels("digits-sklearn", 1)))
    assert r.json()["model_version"] == "v1"  # serving.yaml routes 100 % to v1


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("name", DIGITS)
def test_tritonclient_infer(tc, name, binary):
    x = pixels(name, 8).astype(np.float32)
    inp = triton.InferInput("pixels", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outputs = [triton.InferRequestedOutput("label", binary_data=binary), triton.InferRequestedOutput("probabilities", binary_data=binary)]
    result = tc.infer(name, [inp], model_version="v2", outputs=outputs, request_id="abc")
    direct = load_runner(f"{name}:v2").run(x)
    np.testing.assert_array_equal(result.as_numpy("label"), direct["label"])
    np.testing.assert_allclose(result.as_numpy("probabilities"), direct["probabilities"], rtol=1e-4, atol=1e-6)
    assert result.get_response()["model_version"] == "v2" and result.get_response()["id"] == "abc"


def test_tritonclient_metadata_and_health(tc):
    assert tc.is_server_live() and tc.is_server_ready()
    assert tc.is_model_ready("digits-onnx", "v1")
    meta = tc.get_model_metadata("digits-onnx", "v2")
    assert meta["versions"] == ["v2"] and meta["inputs"][0]["shape"] == [-1, 1, 8, 8]
    x = pixels("digits-sklearn", 3).astype(np.float32)
    inp = triton.InferInput("pixels", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    assert tc.infer("digits-sklearn", [inp]).as_numpy("label").tolist() == load_runner("digits-sklearn:v1").run(x)["label"].tolist()


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "code"),
    [
        ("POST", "/v2/models/nope/infer", {"inputs": []}, 404, "model_not_found"),
        ("POST", "/v2/models/digits-sklearn/versions/v9/infer", None, 404, "model_not_found"),
        ("GET", "/v2/models/nope", None, 404, "model_not_found"),
        ("GET", "/v2/models/digits-sklearn/versions/v9/ready", None, 404, "not_found"),
        ("GET", "/v2/nothing/here", None, 404, "not_found"),
        ("GET", "/v2/models/digits-sklearn/infer", None, 405, "method_not_allowed"),
        ("POST", "/v2/models/digits-sklearn/infer", "not json", 400, "bad_request"),
        ("POST", "/v2/models/digits-sklearn/infer", {"inputs": [{"name": "pixels", "shape": [1, 63], "datatype": "FP32", "data": [1] * 63}]}, 422, "invalid_input"),
        ("POST", "/v2/models/digits-sklearn/infer", {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "INT32", "data": [1] * 64}]}, 422, "invalid_input"),
        ("POST", "/v2/models/digits-sklearn/infer", {"inputs": [{"name": "other", "shape": [1, 64], "datatype": "FP32", "data": [1] * 64}]}, 422, "invalid_input"),
        ("POST", "/v2/models/digits-sklearn/infer", {"inputs": [{"name": "pixels", "shape": [2, 64], "datatype": "FP32", "data": [[1] * 64, [1] * 3]}]}, 422, "invalid_input"),
        ("POST", "/v2/models/digits-torch/infer", {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [1] * 64}]}, 422, "invalid_input"),
        ("POST", "/v2/models/seq-torch/infer", {"inputs": [{"name": "tokens", "shape": [1, 2], "datatype": "INT64", "data": [1, 400]}]}, 422, "invalid_input"),
        ("POST", "/v2/models/digits-sklearn/infer", {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [1] * 64}], "outputs": [{"name": "nope"}]}, 400, "bad_request"),
    ],
)
def test_client_mistakes_get_a_clear_json_error(http, method, path, payload, status, code):
    content = payload if isinstance(payload, str) else (json.dumps(payload) if payload is not None else None)
    r = http.request(method, path, content=content)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code and body["error"]
    assert "Traceback" not in r.text


def test_oversized_body_is_413(http):
    r = http.post("/v2/models/digits-sklearn/infer", content=b"x" * (5 * 1024 * 1024))
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"


def test_request_id_is_echoed_or_made(http):
    assert http.get("/v2/health/live", headers={"X-Request-ID": "trace-me"}).headers["x-request-id"] == "trace-me"
    made = {http.get("/v2/health/live").headers["x-request-id"] for _ in range(3)}
    assert len(made) == 3 and all(len(i) == 16 for i in made)


def test_simple_predict_endpoint(http):
    x = data.digits().x_test[:3]
    r = http.post("/predict", json={"model": "digits-torch", "inputs": x.tolist(), "version": "v2"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["version"] == "v2" and doc["outputs"]["label"] == load_runner("digits-torch:v2").run(x.reshape(3, 1, 8, 8))["label"].tolist()
    seq = http.post("/predict", json={"model": "seq-torch", "inputs": [[1, 2, 3], [16, 17, 18, 19, 20, 1]]})
    assert seq.json()["outputs"]["label"] == [0, 3]


@pytest.mark.parametrize(
    ("payload", "status"),
    [({"model": "nope", "inputs": [[1] * 64]}, 404), ({"model": "digits-sklearn", "inputs": [[1] * 5]}, 422),
     ({"model": "digits-sklearn", "inputs": []}, 422), ({"model": "digits-sklearn", "inputs": [["a"] * 64]}, 422)],
)
def test_simple_predict_errors(http, payload, status):
    r = http.post("/predict", json=payload)
    assert r.status_code == status and "error" in r.json()


def test_a_version_that_fails_to_load_is_reported_and_the_rest_serve(model_store, tmp_path):
    config = tmp_path / "serving.yaml"
    config.write_text(json.dumps({"models": {"digits-sklearn": {"versions": ["v1", "v7"], "weights": {"v1": 100}}}}))
    from tests.helpers import ServerProcess

    server = ServerProcess(env={"RTSERVE_CONFIG": str(config), "REDIS_URL": ""}, log_path=tmp_path / "serve.log")
    server.start(wait_ready=False)
    try:
        server.wait_until(lambda r: r.status_code == 503 and r.json()["ready"] is False, "/v2/models/digits-sklearn/versions/v7/ready", 120)
        server.wait_until(lambda r: r.status_code == 200, "/v2/models/digits-sklearn/versions/v1/ready", 120)
        with httpx.Client(base_url=server.url) as c:
            assert c.get("/v2/health/ready").status_code == 503  # not every configured version is up
            x = data.digits().x_test[:1]
            assert c.post("/v2/models/digits-sklearn/infer", json=infer_body(x)).status_code == 200
            r = c.post("/v2/models/digits-sklearn/versions/v7/infer", json=infer_body(x))
            assert r.status_code == 503 and r.json()["code"] == "model_not_ready" and "failed to load" in r.json()["error"]
            assert 'rtserve_model_version_state{model="digits-sklearn",state="failed",version="v7"} 1.0' in httpx.get(server.metrics_url).text
    finally:
        server.stop()
