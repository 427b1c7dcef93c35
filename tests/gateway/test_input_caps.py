"""Client input that costs the server in proportion to its size or depth, through the real gateway: documents
nested deeper than anything walks, thousands of named inputs, and names of a megabyte echoed in errors."""

from __future__ import annotations

import time

import grpc
import httpx
import orjson
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from core.errors import ECHO_CHARS, MESSAGE_CHARS
from tests.frontends.test_grpc_server import grpc_headers, grpc_port, until_ready

ROW = [float(v % 17) for v in range(64)]
INFER = "/v2/models/digits-sklearn/infer"
DEEP = 200_000


@pytest.fixture(scope="module")
def http(gateway):
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def stub(gateway) -> pb_grpc.GRPCInferenceServiceStub:
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port(gateway)}"))
    until_ready(lambda: stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready)
    return stub


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def assert_client_error(r: httpx.Response, *statuses: int) -> dict:
    assert r.status_code in statuses, r.text[:500]
    doc = r.json()
    assert doc["code"] != "internal_error" and len(r.content) < MESSAGE_CHARS + 200, r.text[:500]
    return doc


def test_a_repository_load_whose_config_is_nested_200000_deep_is_400(http, gateway):
    admin = gateway.headers(scopes="admin")
    as_string = {"parameters": {"config": nested(DEEP)}}  # what tritonclient's load_model(config=...) sends
    r = http.post("/v2/repository/models/digits-sklearn/load", json=as_string, headers=admin)
    assert "config" in assert_client_error(r, 400)["error"]
    as_object = b'{"parameters": {"config": ' + nested(DEEP).encode() + b"}}"
    r = http.post("/v2/repository/models/digits-sklearn/load", content=as_object, headers=admin)
    assert_client_error(r, 400)


def test_a_grpc_repository_load_whose_config_is_nested_200000_deep_is_invalid_argument(gateway, stub):
    request = pb.RepositoryModelLoadRequest(model_name="digits-sklearn")
    request.parameters["config"].string_param = nested(DEEP)
    with pytest.raises(grpc.RpcError) as err:
        stub.RepositoryModelLoad(request, metadata=list(grpc_headers(gateway, scopes="admin").items()), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()


@pytest.mark.parametrize("route", [INFER, "/predict", "/admin/models/digits-sklearn/weights",
                                   "/admin/models/digits-sklearn/experiment", "/v2/repository/index"])
def test_json_nested_to_the_parsers_limit_in_any_field_is_a_client_error(http, gateway, route):
    deep = "deep"  # replaced by a list nested 1000 deep: orjson reads up to 1024 levels, and repr() of it raises RecursionError
    bodies = {
        INFER: {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": deep, "data": ROW}]},
        "/predict": {"model": "digits-sklearn", "inputs": deep},
        "/admin/models/digits-sklearn/weights": {"weights": deep},
        "/admin/models/digits-sklearn/experiment": {"variants": {"v1": deep}},
        "/v2/repository/index": {"ready": deep},
    }
    method = "PUT" if route.endswith("weights") else "POST"
    scopes = "admin" if route.startswith(("/admin", "/v2/repository")) else "predict"
    content = orjson.dumps(bodies[route]).replace(b'"deep"', b"[" * 1000 + b"]" * 1000)
    r = http.request(method, route, content=content, headers=gateway.headers(scopes=scopes))
    assert_client_error(r, 400, 422)


def test_sixty_thousand_named_inputs_are_refused_before_any_is_decoded(http, gateway):
    items = [{"name": f"i{n}", "shape": [1], "datatype": "FP32", "data": [1.0]} for n in range(60_000)]
    body = orjson.dumps({"inputs": items})
    assert len(body) < 4 * 2**20  # within the body limit: it is the count that is refused
    started = time.perf_counter()
    r = http.post(INFER, content=body, headers=gateway.headers())
    elapsed = time.perf_counter() - started
    doc = assert_client_error(r, 422)
    assert "60000 inputs is over the limit" in doc["error"] and len(r.content) < 200, (r.text[:300], elapsed)


def test_sixty_thousand_requested_outputs_are_refused(http, gateway):
    body = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": ROW}],
            "outputs": [{"name": f"o{n}"} for n in range(60_000)]}
    r = http.post(INFER, json=body, headers=gateway.headers())
    assert "requested outputs is over the limit" in assert_client_error(r, 422)["error"]


def test_sixty_thousand_named_inputs_over_grpc_are_invalid_argument(gateway, stub):
    request = pb.ModelInferRequest(model_name="digits-sklearn")
    for n in range(60_000):
        tensor = request.inputs.add(name=f"i{n}", datatype="FP32", shape=[1])
        tensor.contents.fp32_contents.append(1.0)
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, metadata=list(grpc_headers(gateway).items()), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and len(err.value.details()) < 200, err.value.details()[:300]


@pytest.mark.parametrize("where", ["input name", "output name", "model name", "datatype", "unknown field"])
def test_a_huge_name_is_echoed_short(http, gateway, where):
    huge = "n" * 1_000_000
    tensor = {"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": ROW}
    route, body = INFER, {"inputs": [tensor]}
    if where == "input name":
        tensor["name"] = huge
    elif where == "output name":
        body["outputs"] = [{"name": huge}]
    elif where == "model name":
        route = f"/v2/models/{'n' * 30_000}/infer"  # a path stays within the header limit
    elif where == "datatype":
        tensor["datatype"] = huge
    else:
        route, body = "/predict", {"model": "digits-sklearn", "inputs": [ROW], huge: 1}
    r = http.post(route, json=body, headers=gateway.headers())
    doc = assert_client_error(r, 400, 404, 422)
    assert len(doc["error"]) < 2 * ECHO_CHARS + 100, doc["error"]
