"""Servers of the app tests: one with the front door off (the same app through BentoML's `mount_asgi_app`, behind
its middleware), and one taking users' models (`rtserve deploy`, `rtserve optimize`): two workers, auth, formats that
run code allowed (each deploy still asks), a 4 MiB upload limit, one demo model."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.cli import main
from gateway.auth import AuthSettings
from gateway.tokens import mint
from tests.helpers import Gateway, ServerProcess
from tests.models.test_formats import assert_same


@pytest.fixture(scope="session")
def behind_bentoml(model_store, tmp_path_factory) -> Iterator[Gateway]:
    """One worker, auth on, no Redis, `RTSERVE_FRONT_DOOR_ENABLED=false`."""
    tmp = tmp_path_factory.mktemp("behind-bentoml")
    secret_file = tmp / "jwt-secret"
    secret_file.write_text(secrets.token_hex(32))
    env = {
        "REDIS_URL": "",
        "RTSERVE_FRONT_DOOR_ENABLED": "false",
        "RTSERVE_AUTH_ENABLED": "true",
        "RTSERVE_AUTH_HS256_SECRET_FILE": str(secret_file),
    }
    server = ServerProcess(env=env, log_path=tmp / "serve.log")
    try:
        yield Gateway(server.start(), AuthSettings(hs256_secret_file=secret_file), "")
    finally:
        server.stop()


UPLOAD_LIMIT = 4 * 2**20


class Deploys:
    def __init__(self, server: ServerProcess, secret_file: Path) -> None:
        self.server = server
        self.secret_file = secret_file
        auth = AuthSettings(hs256_secret_file=secret_file)
        self.headers = {"Authorization": f"Bearer {mint(auth, subject='alice', scopes='predict admin', tenant='acme', ttl_s=3600)}"}

    @property
    def env(self) -> dict[str, str]:
        return {"RTSERVE_URL": self.server.url, "RTSERVE_AUTH_HS256_SECRET_FILE": str(self.secret_file)}

    def infer(self, name: str, x, version: str | None = None) -> dict[str, np.ndarray]:
        """One REST call per worker connection (to `version`, else where the routes send it); the answers must agree."""
        path = f"{self.server.url}/v2/models/{name}" + (f"/versions/{version}" if version else "")
        meta = httpx.get(path, headers=self.headers).json()
        arrays = x if isinstance(x, dict) else {meta["inputs"][0]["name"]: x}
        body = {"inputs": [{"name": n, "datatype": "FP32", "shape": list(a.shape), "data": a.ravel().tolist()}
                           for n, a in arrays.items()]}
        answers = []
        for _ in range(4):  # new connections: both workers answer
            r = httpx.post(f"{path}/infer", json=body, headers=self.headers)
            assert r.status_code == 200, r.text
            answers.append({o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in r.json()["outputs"]})
        for other in answers[1:]:
            assert_same(other, answers[0])
        return answers[0]

    def served_versions(self, name: str) -> list[str]:
        doc = httpx.get(f"{self.server.url}/admin/models", headers=self.headers).json()
        return list(doc.get(name, {}).get("versions", {}))


@pytest.fixture(scope="session")
def deploys(model_store, tmp_path_factory) -> Iterator[Deploys]:
    tmp = tmp_path_factory.mktemp("deploy")
    secret_file = tmp / "jwt-secret"
    secret_file.write_text(secrets.token_hex(32))
    config = tmp / "serving.yaml"  # one demo model: the others' traffic, and a fast start
    config.write_text("defaults:\n  max_latency_ms: 5000\nmodels:\n  digits-sklearn:\n    versions: [v1]\n    weights: {v1: 100}\n")
    server = ServerProcess(env={
        "RTSERVE_CONFIG": str(config),
        "REDIS_URL": "",
        "RTSERVE_WORKERS": "2",
        "RTSERVE_AUTH_ENABLED": "true",
        "RTSERVE_AUTH_HS256_SECRET_FILE": str(secret_file),
        "RTSERVE_IMPORT_ALLOW_CODE_FORMATS": "true",
        "RTSERVE_IMPORT_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
        "RTSERVE_OPTIMIZE_MEASURE_S": "0.3",  # the report's latency: enough calls to have numbers, not to trust them
    }, log_path=tmp / "serve.log")
    try:
        server.start()
        d = Deploys(server, secret_file)
        for _ in range(4):  # each on a new connection, so both workers have reached the routing state
            server.wait_until(lambda r: r.status_code == 200, "/admin/models", 60, headers=d.headers)
        yield d
    finally:
        server.stop()


@pytest.fixture
def cli(deploys, monkeypatch, capsys):
    """`rtserve ARGS...` in this process: (exit status, stdout, stderr)."""
    for k, v in deploys.env.items():
        monkeypatch.setenv(k, v)

    def run(*args: str) -> tuple[int, str, str]:
        status = main([str(a) for a in args])
        out = capsys.readouterr()
        return status, out.out, out.err

    return run
