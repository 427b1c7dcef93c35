"""Admin operations through the real gateway: version names the store gives a meaning of their own are refused
on every load path, and an experiment's status counts only what it routed since it started."""

from __future__ import annotations

import grpc
import httpx
import pytest
from pydantic import ValidationError
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from app.cli import main as cli
from runners.settings import ServingConfig
from tests.frontends.test_grpc_server import grpc_headers, grpc_port, until_ready
from tests.routing.test_routing_e2e import INFER, admin, body

MODEL = "digits-torch"


@pytest.mark.parametrize("version", ["latest", "LATEST", "V1"])
def test_a_version_the_store_aliases_is_refused_on_every_load_path(gateway, version, monkeypatch, capsys):
    r = admin(gateway, "POST", f"/admin/models/{MODEL}/versions/{version}/load")
    assert r.status_code == 422 and r.json()["code"] == "invalid_input", r.text
    r = admin(gateway, "POST", f"/v2/repository/models/{MODEL}/load", {"parameters": {"version": version}})
    assert r.status_code == 422 and r.json()["code"] == "invalid_input", r.text

    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port(gateway)}"))
    until_ready(lambda: stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready)
    request = pb.RepositoryModelLoadRequest(model_name=MODEL)
    request.parameters["version"].string_param = version
    with pytest.raises(grpc.RpcError) as err:
        stub.RepositoryModelLoad(request, metadata=list(grpc_headers(gateway, scopes="admin").items()), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()

    monkeypatch.setenv("RTSERVE_URL", gateway.url)
    monkeypatch.setenv("RTSERVE_TOKEN", gateway.token(scopes="admin"))
    assert cli(["load", MODEL, version]) == 2
    assert "422" in capsys.readouterr().err

    with pytest.raises(ValidationError, match="version"):
        ServingConfig.model_validate({"models": {MODEL: {"versions": ["v1", version]}}})
    loaded = admin(gateway, "GET", "/admin/models").json()[MODEL]["loaded"]
    assert version not in loaded and "latest" not in loaded


def summary(gateway) -> dict[str, dict]:
    r = admin(gateway, "GET", f"/admin/models/{MODEL}/experiment")
    assert r.status_code == 200, r.text
    return r.json()["summary"]


def test_an_experiments_counts_start_at_zero_when_it_starts(gateway):
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        def send(n: int, first_user: int) -> None:
            for u in range(first_user, first_user + n):
                r = client.post(INFER.format(MODEL), json=body(MODEL, u), headers=gateway.headers(sub=f"exp-user-{u}"))
                assert r.status_code == 200, r.text

        send(20, 0)  # traffic before any experiment, routed by the weights
        for round_, name in enumerate(("counts-a", "counts-b")):
            r = admin(gateway, "POST", f"/admin/models/{MODEL}/experiment",
                      {"name": name, "variants": {"v1": 50, "v2": 50}, "control": "v1"})
            assert r.status_code == 201, r.text
            try:
                assert {v: s["requests"] for v, s in summary(gateway).items()} == {"v1": 0, "v2": 0}
                # A worker routes by the experiment once it has seen it (within milliseconds): until the experiment
                # has counted 12 requests, send one more; traffic it did not route must not count.
                for u in range(100 * (round_ + 1), 100 * (round_ + 1) + 60):
                    if sum(s["requests"] for s in summary(gateway).values()) >= 12:
                        break
                    send(1, u)
                assert sum(s["requests"] for s in summary(gateway).values()) == 12
            finally:
                assert admin(gateway, "DELETE", f"/admin/models/{MODEL}/experiment").status_code == 200
            send(5, 50 + round_ * 10)  # traffic between experiments is no experiment's
