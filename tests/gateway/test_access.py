"""Who may ask what, over every front end: tokens with claims that are not text or live too long,
repeated credentials, open and closed readiness, gRPC's choice of auth by RPC, priority and model
permissions. The real HTTP app and gRPC front end in this process, over the real models."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import grpc
import httpx
import numpy as np
import pytest
import pytest_asyncio
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from frontends.grpc.server import GrpcFrontend
from frontends.grpc.servicer import open_rpcs
from frontends.grpc.settings import GrpcSettings
from gateway.access import FORBIDDEN_MODEL, AccessSettings, TierAccess
from gateway.auth import read_secret_file
from gateway.ratelimit import RateLimitSettings, TierLimit
from gateway.settings import GatewaySettings
from loadtest.servers import free_port
from tests.inprocess import InProcess, serve_in_process

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.cache_independent]
"""Authentication and permissions: admission decides before the cache is asked."""

MODEL = "digits-sklearn"
ROW = [float(v % 17) for v in range(64)]
TIERS = RateLimitSettings(
    tiers={"gold": TierLimit(rate=1000, burst=1000), "lab": TierLimit(rate=1000, burst=1000)},
    tenants={"vip": "gold", "labrat": "lab"},
)
ACCESS = AccessSettings(tiers={"gold": TierAccess(top_priority=1), "lab": TierAccess(models=["seq-torch"])})


@dataclass
class Served:
    http: InProcess
    stub: pb_grpc.GRPCInferenceServiceStub

    @property
    def client(self) -> httpx.AsyncClient:
        return self.http.client

    @property
    def parts(self):
        return self.http.runtime.parts

    def headers(self, **claims) -> dict[str, str]:
        """A valid token of tenant acme, scope predict, with these claims on top."""
        now = int(time.time())
        token = self.signed({"sub": "alice", "tenant": "acme", "scope": "predict batch", "iat": now, "exp": now + 600, **claims})
        return {"Authorization": f"Bearer {token}"}

    def metadata(self, **claims) -> tuple[tuple[str, str], ...]:
        return (("authorization", self.headers(**claims)["Authorization"]),)

    def signed(self, claims: dict) -> str:
        """A token with these claims exactly, signed with the server's key: what fails is the claims."""
        secret = read_secret_file(self.http.auth.hs256_secret_file)

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        signing_input = f"{b64(json.dumps({'alg': 'HS256'}).encode())}.{b64(json.dumps(claims).encode())}"
        return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(model_store, tmp_path_factory) -> AsyncIterator[Served]:
    async with serve_in_process(tmp_path_factory.mktemp("access"), metrics=True, ratelimit=TIERS, access=ACCESS) as s:
        frontend = GrpcFrontend(s.runtime.parts, GrpcSettings(host="127.0.0.1", port=free_port()))
        port = await frontend.start(shared=False)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            yield Served(s, pb_grpc.GRPCInferenceServiceStub(channel))
        finally:
            await channel.close()
            await frontend.stop()


def infer_request(model: str = MODEL, version: str = "", priority: int = 0) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(
        model_name=model,
        model_version=version,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="FP32", shape=[1, 64])],
        raw_input_contents=[np.asarray([ROW], dtype=np.float32).tobytes()],
    )
    if priority:
        request.parameters["priority"].uint64_param = priority
    return request


async def grpc_code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def oip(**parameters) -> dict:
    doc = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": ROW}]}
    return {**doc, "parameters": parameters} if parameters else doc


# --- tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize("claim", ["sub", "tenant", "scope"])
async def test_a_claim_that_is_not_text_is_401_on_every_front_end(served, claim):
    now = int(time.time())
    claims = {"sub": "alice", "tenant": "acme", "scope": "predict batch", "iat": now, "exp": now + 600}
    claims[claim] = "\ud800x" if claim != "scope" else "predict batch \ud800"
    auth = {"Authorization": f"Bearer {served.signed(claims)}"}
    for method, path, body in (("POST", "/v2/jobs", {"model": MODEL, "inputs": [ROW]}),
                               ("POST", "/predict", {"model": MODEL, "inputs": [ROW]}),
                               ("POST", f"/v2/models/{MODEL}/infer", oip()),
                               ("POST", f"/v2/models/{MODEL}/infer/stream", oip())):
        r = await served.client.request(method, path, json=body, headers=auth)
        assert r.status_code == 401, (path, r.text)
        assert r.json() == {"error": "token claims are not well-formed text", "code": "unauthorized"}
    metadata = (("authorization", auth["Authorization"]),)
    assert await grpc_code(served.stub.ModelInfer(infer_request(), metadata=metadata)) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_token_living_longer_than_the_maximum_is_401(served):
    now = int(time.time())
    for claims in ({"sub": "alice", "scope": "predict", "iat": now, "exp": 10**400},
                   {"sub": "alice", "scope": "predict", "iat": now, "exp": now + 2 * 86400}):
        r = await served.client.post("/predict", json={"model": MODEL, "inputs": [ROW]},
                                     headers={"Authorization": f"Bearer {served.signed(claims)}"})
        assert r.status_code == 401 and r.json()["error"] == "token lifetime is over the maximum of 86400 s", r.text


async def test_two_authorization_headers_are_401_even_when_each_is_valid(served):
    token = served.http.token()
    url = f"/v2/models/{MODEL}/infer"
    twice = [("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}")]
    r = await served.client.post(url, json=oip(), headers=httpx.Headers(twice))
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "send one bearer token in one Authorization header"
    r = await served.client.post(url, json=oip(), headers=served.http.headers())
    assert r.status_code == 200, r.text
    call = served.stub.ModelInfer(infer_request(), metadata=tuple(twice))
    assert await grpc_code(call) == grpc.StatusCode.UNAUTHENTICATED
    assert await grpc_code(served.stub.ModelInfer(infer_request(), metadata=twice[:1])) == grpc.StatusCode.OK


# --- readiness and metadata: what is open, decided by route and by RPC ---------------------


async def test_server_probes_are_open_and_give_a_status_only(served):
    assert (await served.client.get("/v2/health/live")).json() == {"live": True}
    assert (await served.client.get("/v2/health/ready")).json() == {"ready": True}
    detail = (await served.client.get("/v2/health/ready", headers=served.headers())).json()
    assert detail["ready"] is True and "background" in detail
    assert await grpc_code(served.stub.ServerLive(pb.ServerLiveRequest())) == grpc.StatusCode.OK
    assert (await served.stub.ServerReady(pb.ServerReadyRequest())).ready is True


async def test_model_readiness_needs_a_token_and_answers_alike_for_any_name(served):
    for path in (f"/v2/models/{MODEL}/ready", f"/v2/models/{MODEL}/versions/v1/ready", "/v2/models/nothing/ready",
                 "/v2/models/nothing/versions/v1/ready", f"/v2/models/{MODEL}/versions/v9/ready"):
        r = await served.client.get(path)
        assert r.status_code == 401 and r.json() == {"error": "missing bearer token", "code": "unauthorized"}, path
    assert (await served.client.get(f"/v2/models/{MODEL}/ready", headers=served.headers())).status_code == 200
    for name, version in ((MODEL, ""), (MODEL, "v1"), ("nothing", ""), ("nothing", "v1")):
        call = served.stub.ModelReady(pb.ModelReadyRequest(name=name, version=version))
        assert await grpc_code(call) == grpc.StatusCode.UNAUTHENTICATED, (name, version)
    ready = await served.stub.ModelReady(pb.ModelReadyRequest(name=MODEL), metadata=served.metadata())
    assert ready.ready is True


async def test_only_the_server_rpcs_are_open_by_default():
    assert open_rpcs(GatewaySettings().open_path_pattern()) == {"ServerLive", "ServerReady", "ServerMetadata"}
    opened = GatewaySettings(open_paths=["/v2", "/v2/health/*", "/v2/models/*/ready", "/v2/models/*/versions/*/ready"])
    assert open_rpcs(opened.open_path_pattern()) == {"ServerLive", "ServerReady", "ServerMetadata", "ModelReady"}


async def test_grpc_decides_auth_by_the_rpc_not_by_a_path_built_from_the_request(served):
    # an operator who opens model readiness: a version named "v1/ready" once made ModelMetadata an open call
    opened = GatewaySettings(open_paths=["/v2", "/v2/health/*", "/v2/models/*/ready", "/v2/models/*/versions/*/ready"])
    frontend = GrpcFrontend(replace(served.parts, open_paths=opened.open_path_pattern()),
                            GrpcSettings(host="127.0.0.1", port=free_port()))
    port = await frontend.start(shared=False)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for version in ("v1/ready", "x/versions/v1/ready", "../ready"):
                call = stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL, version=version))
                assert await grpc_code(call) == grpc.StatusCode.UNAUTHENTICATED, version
            for name in (f"{MODEL}/ready", f"{MODEL}/versions/v1/ready"):
                assert await grpc_code(stub.ModelMetadata(pb.ModelMetadataRequest(name=name))) == grpc.StatusCode.UNAUTHENTICATED
                call = stub.ModelStatistics(pb.ModelStatisticsRequest(name=name, version="v1/ready"))
                assert await grpc_code(call) == grpc.StatusCode.UNAUTHENTICATED
            assert (await stub.ModelReady(pb.ModelReadyRequest(name=MODEL))).ready is True  # opened on purpose
    finally:
        await frontend.stop()


# --- priority: a per-tier permission -----------------------------------------------------


async def test_a_priority_above_the_default_is_403_unless_the_tier_allows_it(served):
    url = f"/v2/models/{MODEL}/infer"
    for priority in (1,):
        r = await served.client.post(url, json=oip(priority=priority), headers=served.headers())
        assert r.status_code == 403, r.text
        assert r.json() == {"error": f"priority {priority} is not allowed for this tenant (no level above the default)",
                            "code": "forbidden"}
        call = served.stub.ModelInfer(infer_request(priority=priority), metadata=served.metadata())
        assert await grpc_code(call) == grpc.StatusCode.PERMISSION_DENIED
    for priority in (0, 2, 3, 99):  # the default level and below (an unknown level is the default) stay open
        r = await served.client.post(url, json=oip(priority=priority), headers=served.headers())
        assert r.status_code == 200, (priority, r.text)
    for priority in (1, 2):
        r = await served.client.post(url, json=oip(priority=priority), headers=served.headers(tenant="vip"))
        assert r.status_code == 200, (priority, r.text)
        call = served.stub.ModelInfer(infer_request(priority=priority), metadata=served.metadata(tenant="vip"))
        assert await grpc_code(call) == grpc.StatusCode.OK


# --- model permissions ---------------------------------------------------------------------


def forbidden_everywhere(served: Served, model: str, claims: dict) -> list:
    """Every front end's request for `model` with a token of these claims."""
    headers = served.headers(**claims)
    line = json.dumps(oip()).encode() + b"\n"
    return [
        ("POST", f"/v2/models/{model}/infer", {"json": oip()}),
        ("POST", f"/v2/models/{model}/versions/v1/infer", {"json": oip()}),
        ("POST", "/predict", {"json": {"model": model, "inputs": [ROW]}}),
        ("GET", f"/v2/models/{model}", {}),
        ("GET", f"/v2/models/{model}/versions/v1", {}),
        ("GET", f"/v2/models/{model}/ready", {}),
        ("GET", f"/v2/models/{model}/versions/v1/ready", {}),
        ("GET", f"/v2/models/{model}/stats", {}),
        ("POST", f"/v2/models/{model}/infer/stream", {"content": line}),
        ("POST", "/v2/jobs", {"json": {"model": model, "inputs": [ROW]}}),
    ], headers


@pytest.mark.parametrize("claims", [{"tenant": "labrat"}, {"models": [MODEL]}, {"models": "seq-torch digits-onnx"}])
async def test_a_model_outside_the_allow_list_is_403_and_never_tells_whether_it_exists(served, claims):
    allowed = {"seq-torch"} if "tenant" in claims else set(claims["models"].split() if isinstance(claims["models"], str) else claims["models"])
    refused = [m for m in (MODEL, "seq-torch", "nothing-here", "digits-onnx") if m not in allowed]
    for model in refused:
        requests, headers = forbidden_everywhere(served, model, claims)
        for method, path, kwargs in requests:
            r = await served.client.request(method, path, headers=headers, **kwargs)
            assert (r.status_code, r.json()) == (403, {"error": FORBIDDEN_MODEL, "code": "forbidden"}), (model, path, r.text)
        metadata = served.metadata(**claims)
        for call in (served.stub.ModelInfer(infer_request(model), metadata=metadata),
                     served.stub.ModelMetadata(pb.ModelMetadataRequest(name=model), metadata=metadata),
                     served.stub.ModelReady(pb.ModelReadyRequest(name=model, version="v1"), metadata=metadata),
                     served.stub.ModelStatistics(pb.ModelStatisticsRequest(name=model), metadata=metadata)):
            try:
                await call
                raise AssertionError(f"{model}: {call} answered")
            except grpc.aio.AioRpcError as exc:
                assert (exc.code(), exc.details()) == (grpc.StatusCode.PERMISSION_DENIED, FORBIDDEN_MODEL), model
        stream = served.stub.ModelStreamInfer(metadata=metadata)
        await stream.write(infer_request(model))
        await stream.done_writing()
        answers = [a async for a in stream]
        assert [a.error_message for a in answers] == [FORBIDDEN_MODEL], model
    for model in allowed:  # allowed: what it says is the model's own answer (digits-onnx is not served here)
        r = await served.client.get(f"/v2/models/{model}", headers=served.headers(**claims))
        assert r.status_code == (404 if model == "digits-onnx" else 200), (model, r.text)
    stats = (await served.client.get("/v2/models/stats", headers=served.headers(**claims))).json()["model_stats"]
    assert {s["name"] for s in stats} <= allowed
    grpc_stats = await served.stub.ModelStatistics(pb.ModelStatisticsRequest(), metadata=served.metadata(**claims))
    assert {s.name for s in grpc_stats.model_stats} <= allowed


async def test_a_token_and_its_tier_must_both_allow_a_model(served):
    both = served.headers(tenant="labrat", models=["seq-torch", MODEL])
    assert (await served.client.get("/v2/models/seq-torch", headers=both)).status_code == 200
    r = await served.client.get(f"/v2/models/{MODEL}", headers=both)
    assert r.status_code == 403 and r.json()["error"] == FORBIDDEN_MODEL
    r = await served.client.get(f"/v2/models/{MODEL}", headers=served.headers(models=[]))
    assert r.status_code == 403  # an empty list allows nothing
