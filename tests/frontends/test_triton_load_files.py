"""tritonclient's `load_model(name, config=..., files=...)` and `get_model_config`, over HTTP and gRPC, against
one real server of this module's own (two workers, auth on): a load request may be larger than any inference
request (1 MiB here) up to its own cap (3 MiB here), and no larger.

ONNX, XGBoost, LightGBM and skops models are deployed from their files and answer as their frameworks do,
to rtol 1e-5 (probabilities, scores; labels exactly). Refused loads are 4xx and leave nothing loaded.
Each load runs a probe (a Python process that opens the model), seconds apiece on a busy machine, so the
module deploys four models and one corrupt file, and its tests share them."""

from __future__ import annotations

import json
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.helpers import Gateway, running_gateway
from tests.models import makers

LIMIT = 1024 * 1024
CAP = 3 * 1024 * 1024
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def served(model_store, tmp_path_factory) -> Iterator[Gateway]:
    env = {"RTSERVE_REPOSITORY_MAX_LOAD_BYTES": str(CAP), "RTSERVE_LIMIT_MAX_BODY_BYTES": str(LIMIT),
           "RTSERVE_GRPC_MAX_MESSAGE_BYTES": str(LIMIT),
           # A load's probe starts a Python process with the framework: seconds on a busy machine.
           "RTSERVE_LIMIT_REQUEST_TIMEOUT_S": "120", "RTSERVE_TRAFFIC_TIMEOUT_S": "120",
           "RTSERVE_REPOSITORY_WAIT_TIMEOUT_S": "100"}
    with running_gateway(tmp_path_factory.mktemp("triton-files"), env) as gw:
        yield gw


@pytest.fixture(scope="module")
def clients(served) -> Iterator[dict[str, object]]:
    over_http = triton_http.InferenceServerClient(served.url.removeprefix("http://"), network_timeout=60.0,
                                                  connection_timeout=60.0)
    over_grpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{served.server.env['RTSERVE_GRPC_PORT']}")
    try:
        yield {"http": over_http, "grpc": over_grpc}
    finally:
        over_http.close()
        over_grpc.close()


@pytest.fixture(scope="module")
def headers(served) -> dict[str, str]:
    return {"authorization": served.headers(scopes="predict admin")["Authorization"]}  # gRPC keys are lower-case


def iris_onnx(folder: Path) -> makers.Made:
    """An MLP exported to ONNX that returns logits; the config's parameters make it a classifier."""
    import torch

    net, x = makers.iris_mlp()
    path = folder / "iris.onnx"
    torch.onnx.export(net, (torch.zeros(2, 4),), str(path), input_names=["measurements"], output_names=["logits"],
                      dynamic_axes={"measurements": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    with torch.inference_mode():
        probs = torch.softmax(net(torch.from_numpy(x)), -1).numpy()
    return makers.Made(path, x, {"probabilities": probs, "label": np.array(IRIS, dtype=object)[probs.argmax(1)]})


IRIS = ["setosa", "versicolor", "virginica"]
CLASSIFIER = {"task": {"string_value": "classification"}, "softmax": {"string_value": "true"},
              "class_names": {"string_value": ",".join(IRIS)}}


def fil(model_type: str) -> dict:
    return {"backend": "fil", "max_batch_size": 64, "parameters": {"model_type": {"string_value": model_type}}}


PADDING = b"\0" * (LIMIT + LIMIT // 2)
"""A file beside the model that makes the load larger than any inference request may be, under the load cap."""
WINE_CONFIG = {**fil("lightgbm"), "input": [{"name": "measurements", "data_type": "TYPE_FP32", "dims": [13]}],
               "version_policy": {"specific": {"versions": [2]}}}
CASES = {
    # name: (maker, config, protocol, {file name: contents or None for the model's own file}, version served)
    "iris-onnx": (iris_onnx, {"platform": "onnxruntime_onnx", "max_batch_size": 16, "parameters": CLASSIFIER}, "http",
                  {"file:1/model.onnx": None}, "1"),
    "cancer-xgb": (makers.cancer_xgboost, fil("xgboost_json"), "grpc",
                   {"file:1/xgboost.json": None, "file:1/padding.bin": PADDING}, "1"),
    "wine-lgbm": (makers.wine_lightgbm, WINE_CONFIG, "http",  # the policy picks folder 2; folder 1 is never read
                  {"file:1/model.txt": b"not a model", "file:2/model.txt": None, "file:2/padding.bin": PADDING}, "2"),
    "iris-skops": (makers.iris_skops, {"backend": "sklearn", "max_batch_size": 8}, "grpc", {"file:1/model.skops": None}, "1"),
}


def infer(client, name: str, version: str, x, headers: dict[str, str], protocol: str) -> dict[str, np.ndarray]:
    module = triton_http if protocol == "http" else triton_grpc
    metadata = client.get_model_metadata(name, version, headers=dict(headers))
    (input_name,) = [t["name"] for t in metadata["inputs"]] if protocol == "http" else [t.name for t in metadata.inputs]
    inp = module.InferInput(input_name, list(x.shape), "FP32")
    inp.set_data_from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    result = client.infer(name, [inp], model_version=version, headers=dict(headers))
    outputs = result.get_response()["outputs"] if protocol == "http" else result.get_response(as_json=True)["outputs"]
    return {o["name"]: result.as_numpy(o["name"]) for o in outputs}


@pytest.mark.parametrize("name", list(CASES))
def test_a_model_loaded_with_its_files_answers_as_its_framework(served, clients, headers, tmp_path, name):
    maker, config, protocol, files, version = CASES[name]
    made = maker(tmp_path)
    files = {key: made.path.read_bytes() if content is None else content for key, content in files.items()}
    clients[protocol].load_model(name, headers=dict(headers), config=json.dumps(config), files=files)
    for answered_by in ("http", "grpc"):  # served by both protocols, under the folder's number, in every worker
        for _ in range(2):
            got = infer(clients[answered_by], name, version, made.x, headers, answered_by)
            assert set(got) == set(made.expected)
            for output, expected in made.expected.items():
                if output == "label":  # class names come back as BYTES
                    labels = [v.decode() if isinstance(v, bytes) else v for v in got[output].tolist()]
                    assert labels == expected.tolist()
                else:
                    np.testing.assert_allclose(got[output], expected, rtol=RTOL, atol=ATOL)


def test_get_model_config_of_a_loaded_model_and_a_demo_model(served, clients, headers):
    over_http = clients["http"].get_model_config("wine-lgbm", "2", headers=dict(headers))
    assert over_http == {
        "name": "wine-lgbm", "backend": "fil", "max_batch_size": 64,
        "input": [{"name": "measurements", "data_type": "TYPE_FP32", "dims": [13]}],
        "output": [{"name": "probabilities", "data_type": "TYPE_FP32", "dims": [3]},
                   {"name": "label", "data_type": "TYPE_INT64", "dims": []}],
        "parameters": {"model_type": {"string_value": "lightgbm"}, "format": {"string_value": "lightgbm"},
                       "task": {"string_value": "classification"}},
    }
    over_grpc = clients["grpc"].get_model_config("wine-lgbm", headers=dict(headers), as_json=True)["config"]
    assert over_grpc["backend"] == "fil" and over_grpc["input"][0]["dims"] == ["13"]  # int64 as JSON strings
    with pytest.raises(InferenceServerException, match="no version"):
        clients["http"].get_model_config("wine-lgbm", "1", headers=dict(headers))

    demo = clients["http"].get_model_config("digits-onnx", headers=dict(headers))
    assert demo["platform"] == "onnxruntime_onnx" and demo["input"][0]["data_type"] == "TYPE_FP32"
    demo_grpc = clients["grpc"].get_model_config("digits-sklearn", headers=dict(headers), as_json=True)["config"]
    assert demo_grpc["name"] == "digits-sklearn" and demo_grpc["output"]


def test_other_grpc_calls_keep_their_own_message_limit(served, clients, headers):
    big = triton_grpc.InferInput("features", [1, LIMIT // 4 + 16], "FP32")
    big.set_data_from_numpy(np.zeros((1, LIMIT // 4 + 16), dtype=np.float32))
    with pytest.raises(InferenceServerException) as refused:
        clients["grpc"].infer("digits-sklearn", [big], headers=dict(headers))
    assert refused.value.status() == "StatusCode.RESOURCE_EXHAUSTED"


def assert_nothing_loaded(served, clients, headers, name: str) -> None:
    index = clients["http"].get_model_repository_index(headers=dict(headers))
    assert name not in {e["name"] for e in index}
    with pytest.raises(InferenceServerException, match="not served|not found|no model"):
        clients["http"].get_model_metadata(name, headers=dict(headers))


@pytest.mark.parametrize(
    ("protocol", "config", "files", "status"),
    [
        ("http", fil("xgboost_json"), {"file:1/xgboost.json": b"{not a booster"}, "422"),
        ("grpc", {"backend": "sklearn"}, {"file:1/model.skops": pickle.dumps([1, 2])}, "StatusCode.INVALID_ARGUMENT"),
        ("http", {"platform": "tensorflow_savedmodel"}, {"file:1/model.savedmodel/saved_model.pb": b"x"}, "400"),
        ("grpc", {"platform": "tensorrt_plan"}, {"file:1/model.plan": b"x"}, "StatusCode.INVALID_ARGUMENT"),
        ("http", fil("xgboost_json"), {"file:1/../xgboost.json": b"{}"}, "400"),
        ("grpc", fil("xgboost_json"), {"file:1/../../xgboost.json": b"{}"}, "StatusCode.INVALID_ARGUMENT"),
        ("http", {"platform": "pytorch_libtorch", "parameters": {"allow_code": {"string_value": "true"}}},
         {"file:1/model.pt": b"never opened"}, "403"),  # the operator has not turned code-running formats on
        ("http", fil("xgboost_json"), {"file:1/xgboost.json": b"x" * (CAP * 3 // 4)}, "413"),
        ("grpc", fil("xgboost_json"), {"file:1/xgboost.json": b"x" * (CAP + 1)}, "StatusCode.RESOURCE_EXHAUSTED"),
    ],
    ids=["corrupt-http", "pickle-as-skops-grpc", "platform-http", "platform-grpc", "dotdot-http", "dotdot-grpc",
         "code-format-http", "over-cap-http", "over-cap-grpc"],
)
def test_refused_loads_are_client_errors_and_leave_nothing_loaded(served, clients, headers, protocol, config, files,
                                                                  status):
    name = f"refused-{uuid.uuid4().hex[:8]}"
    with pytest.raises(InferenceServerException) as refused:
        clients[protocol].load_model(name, headers=dict(headers), config=json.dumps(config), files=files)
    assert refused.value.status() == status, refused.value
    assert_nothing_loaded(served, clients, headers, name)


def test_files_need_a_config(served, clients, headers):
    with pytest.raises(InferenceServerException, match="needs parameters.config") as refused:
        clients["grpc"].load_model("no-config", headers=dict(headers), files={"file:1/model.onnx": b"x"})
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
