"""Requests that never finish (slow bodies cut by the request timeout, clients that leave mid-body)
release their version, so unloading it still completes. Real server, real sockets."""

from __future__ import annotations

import secrets
import socket
import time
import uuid

import httpx
import pytest

from gateway.auth import AuthSettings
from gateway.tokens import mint
from tests.helpers import ServerProcess, gateway_env

PATH = "/v2/models/digits-sklearn/versions/v2/infer"


@pytest.fixture
def server(model_store, tmp_path):
    secret = tmp_path / "jwt-secret"
    secret.write_text(secrets.token_hex(32))
    env = {
        **gateway_env(secret, f"rtserve-test:{uuid.uuid4().hex}:", workers=1),
        "RTSERVE_LIMIT_REQUEST_TIMEOUT_S": "1",  # the request is cancelled after 1 s ...
        "RTSERVE_LIMIT_BODY_READ_TIMEOUT_S": "30",  # ... long before our own body timeout would answer
    }
    proc = ServerProcess(env=env, log_path=tmp_path / "serve.log").start()
    try:
        yield proc, AuthSettings(hs256_secret_file=secret)
    finally:
        proc.stop()


def partial_request(port: int, token: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: 1000\r\n\r\n{{\"inputs\": [".encode()
    )
    return sock


def versions(url: str, headers: dict[str, str]) -> dict:
    return httpx.get(url + "/admin/models", headers=headers, timeout=5).json()["digits-sklearn"]["versions"]


def test_slow_and_departing_clients_do_not_block_an_unload(server):
    proc, auth = server
    token = mint(auth, subject="client", scopes="predict", tenant="acme", ttl_s=600)
    admin = {"Authorization": f"Bearer {mint(auth, subject='ops', scopes='admin', tenant='ops', ttl_s=600)}"}
    slow = [partial_request(proc.port, token) for _ in range(4)]
    for sock in [partial_request(proc.port, token) for _ in range(4)]:
        sock.close()  # gone mid-body
    deadline = time.monotonic() + 10  # the request timeout cancels the slow ones while they are still connected
    while versions(proc.url, admin)["v2"]["active"]:
        assert time.monotonic() < deadline, "cancelled requests still hold the version"
        time.sleep(0.1)
    for sock in slow:
        sock.close()
    assert httpx.post(proc.url + "/admin/models/digits-sklearn/versions/v2/unload", headers=admin, timeout=5).status_code == 202
    deadline = time.monotonic() + 15
    while "v2" in versions(proc.url, admin):
        assert time.monotonic() < deadline, "unloading v2 waits for requests that will never finish"
        time.sleep(0.1)
    ok = httpx.post(proc.url + "/v2/models/digits-sklearn/infer", headers={"Authorization": f"Bearer {token}"},
                    json={"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [1.0] * 64}]})
    assert ok.status_code == 200 and ok.json()["model_version"] == "v1"
