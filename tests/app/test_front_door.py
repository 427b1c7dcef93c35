"""Our HTTP paths are served in front of BentoML's middleware; the module that does it fails loudly on another BentoML."""

from __future__ import annotations

import inspect

import bentoml
import httpx
import pytest
from _bentoml_impl.worker import service as bentoml_worker

from app.front_door import SUPPORTED_BENTOML
from gateway.settings import LimitSettings
from tests.inprocess import serve_in_process
from tests.routing.broken import build_broken_versions

ROW = [1.0] * 63 + [3.0]


def test_bentoml_still_builds_the_worker_app_where_the_front_door_hooks_in():
    assert bentoml.__version__.startswith(SUPPORTED_BENTOML), "re-check app/front_door.py against this BentoML"
    assert "service.to_asgi(" in inspect.getsource(bentoml_worker), "BentoML's worker no longer builds its app with Service.to_asgi"


def test_every_path_reaches_our_app_and_bentomls_probes_stay_bentomls(server):
    # a newline in a path parameter never matched BentoML's mount, which answered in plain text
    r = httpx.get(server.url + "/v2/models/a%0Ab/ready")
    assert r.status_code == 404 and r.json()["code"] == "model_not_found", r.text
    r = httpx.get(server.url + "/nothing-here")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert httpx.get(server.url + "/readyz").status_code == 200  # BentoML's own probe


@pytest.mark.asyncio
async def test_a_request_past_its_time_is_cancelled_and_answered_504(model_store, tmp_path):
    build_broken_versions()  # digits-sklearn:slow sleeps 50 ms a call on real inputs
    limits = LimitSettings(request_timeout_s=0.01)
    async with serve_in_process(tmp_path, {"digits-sklearn": {"versions": ["slow"]}}, auth=False, limits=limits) as s:
        body = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": ROW}]}
        r = await s.client.post("/v2/models/digits-sklearn/infer", json=body)
        assert r.status_code == 504 and r.json()["code"] == "deadline_exceeded", r.text
        assert s.runtime.registry.get("digits-sklearn", "slow").active == 0
