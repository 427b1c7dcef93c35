"""The gRPC front end of a real `bentoml serve` (two workers sharing the port, auth, rate limits, cache on
Redis: the session's `gateway`), through `tritonclient.grpc` and grpcio, against its REST answers."""

from __future__ import annotations

import contextlib
import queue
import time

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_digits
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from runners.settings import DEFAULT_CONFIG, ServingConfig
from tests.helpers import Gateway, ServerProcess

SERVING = ServingConfig.model_validate(yaml.safe_load(DEFAULT_CONFIG.read_text()))
VERSIONS = [(name, version) for name, cfg in SERVING.models.items() for version in cfg.versions]
NO_CACHE = {"cache-control": "no-cache"}  # both protocols compute, so the answers are the models', not the cache's


def grpc_port(gateway: Gateway) -> int:
    return int(gateway.server.env["RTSERVE_GRPC_PORT"])


def grpc_headers(gateway: Gateway, **token) -> dict[str, str]:
    """The token as gRPC metadata, whose keys are lower case."""
    return {"authorization": gateway.headers(**token)["Authorization"]}


def until_ready(is_ready) -> None:
    """Each connection goes to one of the workers sharing the port, and the server's HTTP readiness said
    only that the worker which answered it was: poll the connection's own worker."""
    deadline = time.monotonic() + 120
    while not is_ready():
        assert time.monotonic() < deadline, "the gRPC worker never became ready"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def clients(gateway) -> tuple[triton_grpc.InferenceServerClient, triton_http.InferenceServerClient]:
    over_grpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port(gateway)}")
    until_ready(over_grpc.is_server_ready)
    return over_grpc, triton_http.InferenceServerClient(gateway.url.removeprefix("http://"))


@pytest.fixture(scope="module")
def stub(gateway) -> pb_grpc.GRPCInferenceServiceStub:
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port(gateway)}"))
    until_ready(lambda: stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready)
    return stub


def example(spec: dict) -> np.ndarray:
    """A few real rows for an input signature: digits for pixel models, token sequences for seq-torch."""
    if spec["datatype"] == "INT64":
        return np.array([[1, 2, 3, 17, 18, 0], [5, 6, 7, 8, 9, 10]], np.int64)
    rows = load_digits().data[:4].astype(np.float32)
    return rows.reshape([4, *[int(d) for d in spec["shape"][1:]]])


def triton_inputs(module, spec: dict, data: np.ndarray) -> list:
    tensor = module.InferInput(spec["name"], list(data.shape), spec["datatype"])
    tensor.set_data_from_numpy(data)
    return [tensor]


def test_metadata_and_answers_match_rest_on_every_demo_model(gateway, clients):
    over_grpc, over_http = clients
    headers = grpc_headers(gateway)
    assert over_grpc.is_server_live() and over_grpc.is_server_ready()  # open, as /v2/health/* is
    assert over_grpc.get_server_metadata(as_json=True)["name"] == "rtserve"
    for name in SERVING.models:
        grpc_doc = over_grpc.get_model_metadata(name, headers=headers, as_json=True)
        http_doc = over_http.get_model_metadata(name, headers=headers)
        for tensor in grpc_doc["inputs"] + grpc_doc["outputs"]:
            tensor["shape"] = [int(d) for d in tensor["shape"]]  # int64 fields are strings in protobuf JSON
        assert {k: grpc_doc[k] for k in ("name", "versions", "platform", "inputs", "outputs")} == {
            k: http_doc[k] for k in ("name", "versions", "platform", "inputs", "outputs")
        }
    for name, version in VERSIONS:
        assert over_grpc.is_model_ready(name, version, headers=headers)
        spec = over_http.get_model_metadata(name, version, headers=headers)["inputs"][0]
        data = example(spec)
        got = over_grpc.infer(
            name, triton_inputs(triton_grpc, spec, data), model_version=version, headers={**headers, **NO_CACHE}
        )
        want = over_http.infer(
            name, triton_inputs(triton_http, spec, data), model_version=version, headers={**headers, **NO_CACHE}
        )
        assert got.get_response().model_version == version
        np.testing.assert_array_equal(got.as_numpy("label"), want.as_numpy("label"), err_msg=f"{name}:{version}")
        np.testing.assert_allclose(got.as_numpy("probabilities"), want.as_numpy("probabilities"), rtol=1e-5, atol=1e-6)


def test_requests_over_grpc_are_counted_like_any_other(gateway, clients):
    over_grpc, over_http = clients
    spec = over_http.get_model_metadata("digits-onnx", "v2-opt", headers=gateway.headers())["inputs"][0]
    before = _requests(gateway, "digits-onnx", "v2-opt")
    for _ in range(5):
        over_grpc.infer("digits-onnx", triton_inputs(triton_grpc, spec, example(spec)), model_version="v2-opt",
                        headers=grpc_headers(gateway))  # fmt: skip
    assert _requests(gateway, "digits-onnx", "v2-opt") - before == 5


def _requests(gateway: Gateway, model: str, version: str) -> float:
    text = httpx.get(gateway.metrics_url, timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        if family.name == "rtserve_requests"
        for s in family.samples
        if s.name == "rtserve_requests_total" and s.labels.get("model") == model and s.labels.get("version") == version
    )


def pixels_request(shape: tuple[int, int] = (1, 64), model: str = "digits-sklearn") -> pb.ModelInferRequest:
    row = np.zeros(shape, np.float32)
    return pb.ModelInferRequest(
        model_name=model,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="FP32", shape=list(shape))],
        raw_input_contents=[row.tobytes()],
    )


def rest_error(
    gateway: Gateway, headers: dict, shape: tuple[int, int] = (1, 64), model: str = "digits-sklearn"
) -> tuple[int, str]:
    body = {"inputs": [{"name": "pixels", "shape": list(shape), "datatype": "FP32", "data": [0.0] * (shape[0] * shape[1])}]}
    r = httpx.post(f"{gateway.url}/v2/models/{model}/infer", json=body, headers=headers, timeout=10)
    return r.status_code, r.json()["error"]


@pytest.mark.parametrize(
    ("case", "code", "status"),
    [
        ("no token", grpc.StatusCode.UNAUTHENTICATED, 401),
        ("wrong scope", grpc.StatusCode.PERMISSION_DENIED, 403),
        ("unknown model", grpc.StatusCode.NOT_FOUND, 404),
        ("wrong shape", grpc.StatusCode.INVALID_ARGUMENT, 422),
    ],
)
def test_errors_have_their_grpc_status_and_the_message_rest_gives(gateway, stub, case, code, status):
    headers = {"no token": {}, "wrong scope": gateway.headers(scopes="admin")}.get(case, gateway.headers())
    model = "no-such-model" if case == "unknown model" else "digits-sklearn"
    shape = (1, 63) if case == "wrong shape" else (1, 64)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(pixels_request(shape, model), metadata=[(k.lower(), v) for k, v in headers.items()])
    assert (caught.value.code(), caught.value.details()) == (code, rest_error(gateway, headers, shape, model)[1])
    assert rest_error(gateway, headers, shape, model)[0] == status
    assert dict(caught.value.trailing_metadata())["x-request-id"]


def test_a_tenant_over_its_rate_is_resource_exhausted(gateway, stub):
    metadata = [("authorization", gateway.headers(tenant="tiny-tenant")["Authorization"])]
    for _ in range(20):  # the tier allows a burst of 5
        try:
            stub.ModelInfer(pixels_request(), metadata=metadata)
        except grpc.RpcError as exc:
            assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert dict(exc.trailing_metadata())["x-error-code"] == "rate_limited"
            return
    pytest.fail("never rate limited")


def test_metadata_needs_a_token_where_rest_does(gateway, stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="digits-sklearn"))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as caught:  # names a model: not open, as its REST twin is not
        stub.ModelReady(pb.ModelReadyRequest(name="digits-sklearn", version="v2"))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    token = (("authorization", gateway.headers()["Authorization"]),)
    assert stub.ModelReady(pb.ModelReadyRequest(name="digits-sklearn", version="v2"), metadata=token).ready
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelReady(pb.ModelReadyRequest(name="digits-sklearn", version="v9"), metadata=token)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelStatistics(pb.ModelStatisticsRequest(name="digits-sklearn"))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as caught:
        stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest())
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port(gateway)}"))
    assert health.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")).status == 1  # SERVING


def test_request_ids_come_back_in_metadata(gateway, stub):
    metadata = [("authorization", gateway.headers()["Authorization"])]
    _, call = stub.ModelInfer.with_call(pixels_request(), metadata=[*metadata, ("x-request-id", "client-id-42")])
    answered = dict(call.trailing_metadata())
    assert answered["x-request-id"] == "client-id-42" and answered["x-model-version"] == "v1"
    assert answered["x-cache"] in ("hit", "miss") and "ratelimit-remaining" in answered
    _, call = stub.ModelInfer.with_call(pixels_request(), metadata=[*metadata, ("x-request-id", "no spaces allowed")])
    assert dict(call.trailing_metadata())["x-request-id"] not in ("", "no spaces allowed")


def test_a_stream_answers_each_item_and_a_bad_one_inline(gateway, clients):
    over_grpc, _ = clients
    answers: queue.Queue = queue.Queue()
    rows = load_digits().data[:5].astype(np.float32)
    over_grpc.start_stream(callback=lambda result, error: answers.put((result, error)), headers=grpc_headers(gateway))
    try:
        for i, row in enumerate(rows):
            model = "no-such-model" if i == 2 else "digits-sklearn"
            over_grpc.async_stream_infer(model, triton_inputs(triton_grpc, {"name": "pixels", "datatype": "FP32"}, row[None]),
                                         request_id=f"item-{i}")  # fmt: skip
        received = [answers.get(timeout=30) for _ in rows]
    finally:
        over_grpc.stop_stream()
    errors = [error for result, error in received if error is not None]
    labels = {r.get_response().id: int(r.as_numpy("label")[0]) for r, e in received if e is None}
    assert [e.message() for e in errors] == ["model 'no-such-model' is not served here"]
    assert labels == {f"item-{i}": int(d) for i, d in enumerate(load_digits().target[:5]) if i != 2}


def test_a_stream_without_a_token_is_refused_whole(gateway, clients):
    over_grpc, _ = clients
    answers: queue.Queue = queue.Queue()
    over_grpc.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        row = load_digits().data[:1].astype(np.float32)
        with contextlib.suppress(InferenceServerException):  # the refusal may come before the item is sent
            over_grpc.async_stream_infer(
                "digits-sklearn", triton_inputs(triton_grpc, {"name": "pixels", "datatype": "FP32"}, row)
            )
        result, error = answers.get(timeout=30)
    finally:
        over_grpc.stop_stream()
    assert result is None and "StatusCode.UNAUTHENTICATED" in error.status()


def test_a_second_service_on_the_same_grpc_port_is_refused(gateway, tmp_path):
    port = grpc_port(gateway)
    second = ServerProcess(env={"RTSERVE_GRPC_PORT": str(port)}, log_path=tmp_path / "second.log").start(wait_ready=False)
    try:
        deadline = time.monotonic() + 120
        while second.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert second.proc.returncode == 2
        assert f"rtserve: gRPC port {port} is taken by another rtserve service" in (tmp_path / "second.log").read_text()
    finally:
        second.stop()
    assert triton_grpc.InferenceServerClient(f"127.0.0.1:{port}").is_server_ready()  # the first one still serves


def test_the_repository_and_statistics_extensions_answer_over_grpc(gateway, clients):
    over_grpc, over_http = clients
    admin = grpc_headers(gateway, scopes="predict admin")
    index = over_grpc.get_model_repository_index(headers=admin, as_json=True)["models"]
    assert {(m["name"], m["version"]) for m in index} >= set(VERSIONS)
    over_grpc.load_model("digits-onnx", headers=admin, config='{"version_policy": {"specific": {"versions": ["v2-int8"]}}}')
    assert over_grpc.is_model_ready("digits-onnx", "v2-int8", headers=admin)
    with pytest.raises(InferenceServerException) as caught:
        over_grpc.get_model_repository_index(headers=grpc_headers(gateway))  # predict alone may not see the repository
    assert "PERMISSION_DENIED" in caught.value.status()
    spec = over_http.get_model_metadata("digits-onnx", "v2", headers=admin)["inputs"][0]
    over_grpc.infer("digits-onnx", triton_inputs(triton_grpc, spec, example(spec)), model_version="v2", headers=admin)
    stats = over_grpc.get_inference_statistics("digits-onnx", "v2", headers=admin, as_json=True)["model_stats"]
    rest = over_http.get_inference_statistics("digits-onnx", "v2", headers=admin)["model_stats"]
    assert len(stats) == len(rest) == 1 and int(stats[0]["inference_count"]) >= 4
    for key in ("inference_count", "execution_count"):  # int64 fields are strings in protobuf JSON
        assert int(stats[0][key]) == rest[0][key]
    assert int(stats[0]["inference_stats"]["success"]["count"]) == rest[0]["inference_stats"]["success"]["count"]
