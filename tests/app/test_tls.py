"""TLS on both ports from RTSERVE_TLS_CERTFILE and RTSERVE_TLS_KEYFILE, with a certificate made here, through
tritonclient (HTTP and gRPC), curl, grpc and httpx; neither port answers in the clear."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loadtest.servers import free_port
from tests.helpers import ServerProcess

ROW = np.full((1, 64), 3.0, dtype=np.float32)
INFER = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": ROW.ravel().tolist()}]}


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, signed by its own key; (certfile, keyfile)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rtserve test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    keyfile.chmod(0o600)
    return certfile, keyfile


@pytest.fixture(scope="module")
def tls_server(model_store, tmp_path_factory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("tls")
    certfile, keyfile = self_signed(tmp)
    grpc_port = free_port()
    server = ServerProcess(
        env={"REDIS_URL": "", "RTSERVE_TLS_CERTFILE": str(certfile), "RTSERVE_TLS_KEYFILE": str(keyfile),
             "RTSERVE_GRPC_PORT": str(grpc_port)},
        log_path=tmp / "serve.log",
    )
    server.scheme, server.verify = "https", ssl.create_default_context(cafile=str(certfile))
    server.certfile, server.grpc_port = certfile, grpc_port
    try:
        yield server.start()
    finally:
        server.stop()


def test_http_over_tls_through_tritonclient(tls_server):
    client = triton_http.InferenceServerClient(f"127.0.0.1:{tls_server.port}", ssl=True,
                                               ssl_options={"ca_certs": str(tls_server.certfile)})
    assert client.is_server_ready() and client.is_model_ready("digits-sklearn")
    for binary in (True, False):
        tensor = triton_http.InferInput("pixels", [1, 64], "FP32")
        tensor.set_data_from_numpy(ROW, binary_data=binary)
        assert client.infer("digits-sklearn", [tensor]).as_numpy("label").shape == (1,)


def test_http_over_tls_through_curl_and_httpx(tls_server):
    out = subprocess.run(["curl", "-sS", "--cacert", str(tls_server.certfile), "-H", "Content-Type: application/json",
                          "-d", httpx.Request("POST", "/", json=INFER).content.decode(), "-w", "\n%{http_code}",
                          f"{tls_server.url}/v2/models/digits-sklearn/infer"], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0 and out.stdout.endswith("\n200") and '"model_name":"digits-sklearn"' in out.stdout, out
    assert httpx.get(tls_server.url + "/v2/health/ready", verify=tls_server.verify).status_code == 200


def test_grpc_over_tls_through_tritonclient_and_grpc(tls_server):
    target = f"127.0.0.1:{tls_server.grpc_port}"
    client = triton_grpc.InferenceServerClient(target, ssl=True, root_certificates=str(tls_server.certfile))
    assert client.is_server_live() and client.is_model_ready("digits-sklearn")
    tensor = triton_grpc.InferInput("pixels", [1, 64], "FP32")
    tensor.set_data_from_numpy(ROW)
    assert client.infer("digits-sklearn", [tensor]).as_numpy("label").shape == (1,)
    client.close()
    credentials = grpc.ssl_channel_credentials(root_certificates=tls_server.certfile.read_bytes())
    with grpc.secure_channel(target, credentials) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 10  # the health service follows readiness every 0.5 s
        while health.Check(health_pb2.HealthCheckRequest(), timeout=10).status != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "the gRPC health service never said SERVING"
            time.sleep(0.1)


def test_neither_port_answers_in_the_clear(tls_server):
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{tls_server.port}/v2/health/ready", timeout=5)
    with grpc.insecure_channel(f"127.0.0.1:{tls_server.grpc_port}") as channel, pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)


def test_a_certificate_the_client_does_not_trust_is_refused(tls_server):
    with pytest.raises(httpx.ConnectError):
        httpx.get(tls_server.url + "/v2/health/ready", timeout=5)  # the system's trust store only
