"""What the server says about its models must be true, across restarts (a real server on a state file):
serving.yaml against the saved routes, strict readiness, failed versions, and the CLI's exit status."""

from __future__ import annotations

import re
import secrets

import httpx
import pytest
import yaml

from app.cli import main
from gateway.auth import AuthSettings
from tests.faults.load import wait_for
from tests.helpers import Gateway, ServerProcess, gateway_env
from tests.pickled import FILE, demo_estimator, pickled, save_pickled

ROW = [float(v % 17) for v in range(64)]
INFER = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": ROW}]}
GARBAGE = b"\x00 truncated upload \x00" * 8


@pytest.fixture(scope="module")
def versions(model_store) -> None:
    """twin:v1 and twin:spare (copies of digits-sklearn:v1), extra:v1 (a model no serving.yaml lists), and
    versions whose file is not a joblib file."""
    good = pickled(demo_estimator())
    for tag in ("twin:v1", "twin:spare", "extra:v1"):
        save_pickled(tag, good)
    for tag in ("digits-sklearn:garbled", "twin:garbled", "ghost:v1"):
        save_pickled(tag, GARBAGE)


class Restartable:
    """One server's configuration and state file, started again as an operator would after editing serving.yaml."""

    def __init__(self, tmp_path) -> None:
        self.tmp = tmp_path
        secret = tmp_path / "jwt-secret"
        secret.write_text(secrets.token_hex(32))
        self.auth = AuthSettings(hs256_secret_file=secret)
        self.env = {**gateway_env(secret, "", redis_url="", workers=1), "RTSERVE_CONFIG": str(tmp_path / "serving.yaml"),
                    "RTSERVE_ROUTING_STATE_FILE": str(tmp_path / "state" / "routes.json")}
        self.starts = 0
        self.proc: ServerProcess | None = None

    def start(self, models: dict) -> Gateway:
        (self.tmp / "serving.yaml").write_text(yaml.safe_dump({"models": models}))
        self.starts += 1
        self.log = self.tmp / f"serve-{self.starts}.log"
        self.proc = ServerProcess(env=self.env, log_path=self.log).start(wait_ready=False)
        gateway = Gateway(self.proc, self.auth, "")
        admin = gateway.headers(scopes="admin")
        self.proc.wait_until(lambda r: r.status_code == 200, "/admin/models", 180, headers=admin)  # routing state reached
        return gateway

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


@pytest.fixture
def restartable(tmp_path):
    server = Restartable(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def cli(gateway: Gateway, monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setenv("RTSERVE_URL", gateway.url)
    monkeypatch.setenv("RTSERVE_TOKEN", gateway.token(scopes="admin"))
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def infer(gateway: Gateway, model: str) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v2/models/{model}/infer", json=INFER, headers=gateway.headers(), timeout=10)


def test_a_failed_load_fails_the_command_with_the_servers_error_and_is_not_kept(gateway, versions, monkeypatch, capsys):
    code, out, err = cli(gateway, monkeypatch, capsys, "load", "digits-sklearn", "garbled")
    assert code == 2 and "loaded" not in out, (out, err)
    assert "load_failed" not in err and "model.joblib: cannot be unpickled" in err, err
    routes = httpx.get(gateway.url + "/admin/models", headers=gateway.headers(scopes="admin")).json()["digits-sklearn"]
    assert "garbled" not in routes["loaded"], routes


def test_restarts_after_serving_yaml_changes_tell_the_truth(restartable, versions, monkeypatch, capsys):
    # Start 1: serving.yaml sends all of digits-sklearn's traffic to a version that cannot load.
    gw = restartable.start({"digits-sklearn": {"versions": ["garbled"], "weights": {"garbled": 100}}, "twin": {"versions": ["v1"]}})
    assert httpx.get(gw.url + "/v2/health/ready").status_code == 503
    code, _, err = cli(gw, monkeypatch, capsys, "load", "twin", "garbled")
    assert code == 2 and "cannot be unpickled" in err, err
    assert cli(gw, monkeypatch, capsys, "load", "twin", "spare")[0] == 0
    assert cli(gw, monkeypatch, capsys, "route", "set", "twin", "spare=100")[0] == 0
    assert cli(gw, monkeypatch, capsys, "load", "extra", "v1")[0] == 0  # a model serving.yaml does not list
    assert cli(gw, monkeypatch, capsys, "load", "ghost", "v1")[0] == 2  # a new model whose one version fails: gone
    restartable.stop()
    # Between the starts twin:spare's file is damaged, so the saved weights point at a version that will fail.
    import bentoml

    with open(bentoml.models.get("twin:spare").path_of(FILE), "wb") as f:
        f.write(GARBAGE)

    # Start 2: the operator fixed serving.yaml.
    gw = restartable.start({"digits-sklearn": {"versions": ["v1"]}, "twin": {"versions": ["v1"]}})
    assert infer(gw, "digits-sklearn").status_code == 200  # serving.yaml's v1 loaded and routed, not the saved garbled
    log = restartable.log.read_text()
    conflicts = [line for line in log.splitlines() if "serving.yaml and the saved routing state" in line]
    assert sum("digits-sklearn: serving.yaml no longer lists ['garbled']: unloaded" in line for line in conflicts) == 1, conflicts

    # twin's saved weights send everything to spare, which failed: not ready, and every answer says why.
    ready = httpx.get(gw.url + "/v2/health/ready")
    assert ready.status_code == 503 and ready.json() == {"ready": False}  # open: the status only
    detail = httpx.get(gw.url + "/v2/health/ready", headers=gw.headers()).json()
    assert list(detail["models"]) == ["twin"] and "spare failed to load" in detail["models"]["twin"], detail
    assert httpx.get(gw.url + "/v2/models/twin/ready", headers=gw.headers()).status_code == 503
    refused = infer(gw, "twin")
    assert refused.status_code == 503 and "does not match the SHA-256 recorded" in refused.json()["error"], refused.text

    code, out, _ = cli(gw, monkeypatch, capsys, "models")
    assert code == 0 and "digits-sklearn  from configuration" in out and "extra  from runtime" in out, out
    assert "ghost" not in out and "ghost" not in (restartable.tmp / "state" / "routes.json").read_text()
    assert infer(gw, "extra").status_code == 200  # a runtime model keeps its saved state across the restart
    # ...and is counted under its own name, so a canary of its next version has numbers to judge
    counted = re.compile(r'rtserve_requests_total\{[^}]*model="extra"[^}]*status_class="2xx"')
    wait_for(lambda: counted.search(httpx.get(gw.metrics_url).text), 10, "extra's requests under its own name")

    # The failed version takes all traffic and still unloads; serving.yaml's weights take over.
    code, out, err = cli(gw, monkeypatch, capsys, "unload", "twin", "spare")
    assert code == 0 and "'v1': 100.0" in out, (out, err)
    wait_for(lambda: httpx.get(gw.url + "/v2/health/ready").status_code == 200, 10, "ready")
    assert infer(gw, "twin").status_code == 200

    assert cli(gw, monkeypatch, capsys, "route", "reset", "extra")[0] == 2  # nothing in serving.yaml to return to
    assert cli(gw, monkeypatch, capsys, "load", "twin", "v1")[0] == 0
    code, out, _ = cli(gw, monkeypatch, capsys, "route", "reset", "twin")
    assert code == 0 and "loaded ['v1'], weights {'v1': 100.0}" in out, out

    # Every change is in the audit log (here the state file's), with who made it.
    code, out, _ = cli(gw, monkeypatch, capsys, "audit", "--limit", "100")
    lines = out.splitlines()
    assert code == 0 and any("system@system  serving_yaml  digits-sklearn" in line and "garbled" in line for line in lines), out
    assert any("alice@acme  unload  twin  loaded" in line for line in lines), out
    assert any("alice@acme  unload_failed  ghost" in line for line in lines), out
    assert any("alice@acme  reset  twin" in line for line in lines), out
