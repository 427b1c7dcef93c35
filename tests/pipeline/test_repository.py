"""The model repository extension over the real HTTP app in-process: index, load and unload through the
routing state, and the wait for every worker, with a second worker process writing its own state file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import pytest_asyncio

from pipeline.repository import RepositorySettings
from tests.helpers import ROOT
from tests.inprocess import serve_in_process

pytestmark = pytest.mark.asyncio(loop_scope="module")
ADMIN_ONLY = pytest.mark.cache_independent
"""The repository API's own answers, decided before the cache; only the unload-then-load test asks for a prediction."""

ROW = [float(v % 17) for v in range(64)]
INFER = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": ROW}]}
MODEL = "/v2/repository/models/digits-sklearn"
ONNX = json.dumps({"platform": "onnxruntime_onnx"})


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(model_store, tmp_path_factory):
    async with serve_in_process(tmp_path_factory.mktemp("repository"), routing=True, metrics=True) as s:
        s.runtime.parts.repository.settings = RepositorySettings(wait_timeout_s=1.0, poll_interval_s=0.02)
        yield s


class OtherWorker:
    """A second process writing version states where the served app's metrics live, as a BentoML worker does."""

    SCRIPT = textwrap.dedent("""
        import sys
        from prometheus_client import CollectorRegistry
        from observability.metrics import Metrics
        metrics = Metrics(CollectorRegistry())
        print("started", flush=True)
        for line in sys.stdin:
            model, version, state = line.split()
            for s in ("loading", "ready", "draining", "failed"):
                metrics.state.labels(model, version, s).set(1 if s == state else 0)
            print("ok", flush=True)
    """)

    def __init__(self, directory: str) -> None:
        env = {"PROMETHEUS_MULTIPROC_DIR": directory, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=ROOT)
        assert self.proc.stdout.readline().strip() == "started"

    def set(self, model: str, version: str, state: str) -> None:
        self.proc.stdin.write(f"{model} {version} {state}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


async def index(served, **body) -> dict[str, tuple[str, str]]:
    r = await served.client.post("/v2/repository/index", json=body or None, headers=served.headers("admin"))
    assert r.status_code == 200, r.text
    return {f"{e['name']}:{e['version']}": (e["state"], e["reason"]) for e in r.json()}


@ADMIN_ONLY
async def test_the_index_lists_every_version_in_the_store_with_its_state(served):
    entries = await index(served)
    assert entries["digits-sklearn:v1"] == entries["digits-sklearn:v2"] == entries["seq-torch:v1"] == ("READY", "")
    assert set(await index(served, ready=True)) == {k for k, (state, _) in entries.items() if state == "READY"}


async def test_unload_then_load_with_tritonclients_config(served):
    admin = served.headers("admin")
    r = await served.client.post(f"{MODEL}/unload", json={"parameters": {"version": "v2", "unload_dependents": False}},
                                 headers=admin)
    assert r.status_code == 200 and r.json() == {"name": "digits-sklearn", "versions": ["v2"]}, r.text
    assert (await index(served))["digits-sklearn:v2"] == ("UNAVAILABLE", "unloaded")
    pinned = "/v2/models/digits-sklearn/versions/v2/infer"
    assert (await served.client.post(pinned, json=INFER, headers=served.headers())).status_code == 404

    config = json.dumps({"name": "digits-sklearn", "version_policy": {"specific": {"versions": ["v2"]}}})
    r = await served.client.post(f"{MODEL}/load", json={"parameters": {"config": config}}, headers=admin)
    assert r.status_code == 200 and r.json()["versions"] == ["v2"], r.text
    assert (await served.client.post(pinned, json=INFER, headers=served.headers())).status_code == 200  # at once
    assert (await index(served))["digits-sklearn:v2"] == ("READY", "")


@ADMIN_ONLY
async def test_a_load_without_versions_loads_those_serving_yaml_names(served):
    r = await served.client.post(f"{MODEL}/load", headers=served.headers("admin"))
    assert r.status_code == 200 and r.json()["versions"] == ["v1", "v2"], r.text


@ADMIN_ONLY
@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        (f"{MODEL}/unload", None, 409, "conflict"),  # a model keeps at least one version: name it
        (f"{MODEL}/unload?version=v1", None, 409, "conflict"),  # v1 takes all traffic
        (f"{MODEL}/unload?version=v7", None, 404, "model_not_found"),
        (f"{MODEL}/load?version=v7", None, 404, "model_not_found"),
        (f"{MODEL}/load", {"parameters": {"version": "../v1"}}, 422, "invalid_input"),
        ("/v2/repository/models/no-such-model/load", None, 404, "model_not_found"),
        ("/v2/repository/models/no-such-model/unload?version=v1", None, 404, "model_not_found"),
        (f"{MODEL}/load?version=v1", {"parameters": {"version": "v2"}}, 400, "bad_request"),
        (f"{MODEL}/load?shard=2", None, 400, "bad_request"),
        (f"{MODEL}/load", {"parameters": {"config": "{not json"}}, 400, "bad_request"),
        (f"{MODEL}/load", {"parameters": {"config": '{"max_batch_size": 8}'}}, 400, "bad_request"),
        (f"{MODEL}/load", {"parameters": {"config": '{"version_policy": {"latest": {"num_versions": 1}}}'}}, 400, "bad_request"),
        (f"{MODEL}/load", {"parameters": {"file:1/model.onnx": "AAAA"}}, 400, "bad_request"),  # files need a config
        (f"{MODEL}/load", {"parameters": {"config": ONNX, "file:1/model.onnx": "not base64!"}}, 400, "bad_request"),
        (f"{MODEL}/load?version=1", {"parameters": {"config": ONNX, "file:1/model.onnx": "AAAA"}}, 400, "bad_request"),
        (f"{MODEL}/load", {"parameters": {"config": ONNX, "file:1/../model.onnx": "AAAA"}}, 400, "bad_request"),
        (f"{MODEL}/unload", {"parameters": {"version": "v2", "file:1/model.onnx": "AAAA"}}, 400, "bad_request"),
        (f"{MODEL}/load", {"parameters": {"version": True}}, 400, "bad_request"),
        (f"{MODEL}/load", {"parameters": []}, 400, "bad_request"),
        (f"{MODEL}/unload", {"parameters": {"version": "v2", "unload_dependents": True}}, 400, "bad_request"),
        (f"{MODEL}/unload", {"params": {}}, 400, "bad_request"),
        ("/v2/repository/index", {"ready": "yes"}, 400, "bad_request"),
        ("/v2/repository/models/digits-sklearn", None, 404, "not_found"),
    ],
)
async def test_bad_repository_requests_are_clear_client_errors(served, path, body, status, code):
    r = await served.client.post(path, json=body, headers=served.headers("admin"))
    assert (r.status_code, r.json()["code"]) == (status, code), r.text


@ADMIN_ONLY
async def test_repository_calls_need_the_admin_scope_and_post(served):
    r = await served.client.post("/v2/repository/index", headers=served.headers("predict"))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    r = await served.client.post(f"{MODEL}/load")
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    r = await served.client.get(f"{MODEL}/load", headers=served.headers("admin"))
    assert r.status_code == 405 and r.headers["allow"] == "POST"


@ADMIN_ONLY
async def test_a_load_waits_for_every_live_worker(served):
    admin = served.headers("admin")
    assert (await served.client.post(f"{MODEL}/unload?version=v2", headers=admin)).status_code == 200
    other = OtherWorker(served.runtime.metrics.directory)
    try:
        other.set("digits-sklearn", "v1", "ready")  # a worker that has not loaded v2 yet
        r = await served.client.post(f"{MODEL}/load?version=v2", headers=admin)
        assert r.status_code == 504 and r.json()["code"] == "repository_timeout", r.text
        assert (await index(served))["digits-sklearn:v2"] == ("LOADING", "ready in 1 of 2 workers")

        other.set("digits-sklearn", "v2", "ready")
        assert (await served.client.post(f"{MODEL}/load?version=v2", headers=admin)).status_code == 200

        other.set("digits-sklearn", "v2", "failed")
        r = await served.client.post(f"{MODEL}/load?version=v2", headers=admin)
        assert r.status_code == 500 and r.json()["code"] == "load_failed", r.text
        assert "failed to load in 1 of 2 workers" in r.json()["error"]
    finally:
        other.stop()
    # The other worker is gone: its file stays, but a dead process is no worker.
    assert (await served.client.post(f"{MODEL}/load?version=v2", headers=admin)).status_code == 200
    assert (await index(served))["digits-sklearn:v2"] == ("READY", "")


@ADMIN_ONLY
async def test_a_worker_counts_from_its_start_not_from_its_first_model(served):
    """A server with no configured model: a deploy right after the start must wait for the worker that holds
    nothing yet, or it answers before that worker serves the new model."""
    admin = served.headers("admin")
    assert (await served.client.post(f"{MODEL}/unload?version=v2", headers=admin)).status_code == 200
    other = OtherWorker(served.runtime.metrics.directory)  # started; holds no model
    try:
        r = await served.client.post(f"{MODEL}/load?version=v2", headers=admin)
        assert r.status_code == 504 and r.json()["code"] == "repository_timeout", r.text
        assert (await index(served))["digits-sklearn:v2"] == ("LOADING", "ready in 1 of 2 workers")
    finally:
        other.stop()
    assert (await served.client.post(f"{MODEL}/load?version=v2", headers=admin)).status_code == 200


@ADMIN_ONLY
async def test_model_changes_need_authentication_on(model_store, tmp_path):
    async with serve_in_process(tmp_path, auth=False, routing=True) as s:
        r = await s.client.post(f"{MODEL}/unload?version=v2")
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
        r = await s.client.post("/v2/repository/index")
        assert r.status_code == 200 and {e["version"] for e in r.json() if e["name"] == "digits-sklearn"} >= {"v1", "v2"}
