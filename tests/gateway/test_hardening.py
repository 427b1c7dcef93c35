"""Regression tests for holes found by attacking the service, against the real HTTP app in-process."""

from __future__ import annotations

import asyncio
import io
import logging
import tracemalloc

import numpy as np
import orjson
import pytest
import pytest_asyncio

from core.errors import DeadlineExceeded
from gateway.ratelimit import RateLimitSettings, TierLimit
from gateway.settings import LimitSettings
from observability.logs import LogSettings, setup_logging
from routing.stats import MetricsSnapshotSource
from tests.inprocess import serve_in_process

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.cache_independent]
"""Refusals decided before the cache (limits, auth, admission), requests that pass it by (no-cache, no body),
and a cache the test makes itself."""

ROW = [float(v % 17) for v in range(64)]


def oip(shape: list[int], data: list, name: str = "pixels", datatype: str = "FP32") -> dict:
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(model_store, tmp_path_factory):
    limits = LimitSettings(max_body_bytes=256 * 1024)
    ratelimit = RateLimitSettings(enabled=True, rate=1000, burst=1000, tiers={"tiny": TierLimit(rate=0.01, burst=2)},
                                  tenants={"acme": "tiny"})
    async with serve_in_process(tmp_path_factory.mktemp("hardening"), routing=True, metrics=True, limits=limits,
                                ratelimit=ratelimit) as s:
        yield s


async def test_predict_checks_limits_before_padding_rows(served):
    body = {"model": "seq-torch", "inputs": [[1] * 8000] + [[1]] * 8000}  # ~64 KB; padded it would be 512 MB
    tracemalloc.start()
    try:
        r = await served.client.post("/predict", json=body, headers=served.headers(tenant="big"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 422 and r.json()["code"] == "invalid_input", r.text
    assert peak < 32 * 2**20, f"peak {peak / 2**20:.0f} MiB for a 64 KB request"


async def test_predict_has_the_body_limit_of_the_oip_api(served):
    r = await served.client.post("/predict", content=b"[" + b"1," * 200_000 + b"1]", headers=served.headers(tenant="big"))
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"


@pytest.mark.parametrize("dims", [9, 65, 100])
async def test_a_shape_with_too_many_dimensions_is_a_client_error(served, dims):
    shape = [1] * (dims - 1) + [64]
    r = await served.client.post("/v2/models/digits-sklearn/infer", json=oip(shape, ROW), headers=served.headers(tenant="big"))
    assert r.status_code == 422 and "dimensions" in r.json()["error"], r.text
    header = orjson.dumps({"inputs": [{"name": "pixels", "shape": shape, "datatype": "FP32", "parameters": {"binary_data_size": 256}}]})
    r = await served.client.post(
        "/v2/models/digits-sklearn/infer",
        content=header + np.asarray(ROW, np.float32).tobytes(),
        headers={**served.headers(tenant="big"), "Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 422, r.text


async def test_a_declared_shape_over_the_limits_is_refused_before_its_data_is_read(served):
    r = await served.client.post("/v2/models/digits-sklearn/infer", json=oip([10**12, 64], ROW), headers=served.headers(tenant="big"))
    assert r.status_code == 422 and "limit" in r.json()["error"]


@pytest.mark.parametrize("header", ["x-request-timeout-ms", "inference-header-content-length"])
@pytest.mark.parametrize("value", [b"9" * 400, "１２".encode(), b"\xb2", b"-1", b"1e3"])
async def test_integer_headers_of_any_length_or_script_are_client_errors(served, header, value):
    r = await served.client.post("/v2/models/digits-sklearn/infer", json=oip([1, 64], ROW),
                                 headers={**served.headers(tenant="big"), header: value})
    assert r.status_code == 400 and r.json()["code"] == "bad_request", r.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/admin/models/digits-sklearn/experiment", {"variants": 5}),
        ("POST", "/admin/models/digits-sklearn/experiment", {"variants": {"v1": 50, "v2": 50}, "mirror_fraction": "abc"}),
        ("POST", "/admin/models/digits-sklearn/canary", {"version": "v2", "steps": "ab"}),
        ("POST", "/admin/models/digits-sklearn/canary", {"version": "v2", "min_requests": "x"}),
        ("POST", "/admin/models/digits-sklearn/canary", {"version": 7}),
        ("PUT", "/admin/models/digits-sklearn/weights", {"weights": {"v1": "lots"}}),
        ("PUT", "/admin/models/digits-sklearn/shadow", {"version": "v2", "fraction": 2}),
        ("POST", "/admin/models/digits-sklearn/versions/not a tag!/load", None),
        ("POST", "/admin/models/digits-sklearn/versions/%2e%2e/load", None),
    ],
)
async def test_admin_bodies_of_the_wrong_shape_are_client_errors(served, method, path, body):
    r = await served.client.request(method, path, json=body, headers=served.headers("admin"))
    assert 400 <= r.status_code < 500 and r.json()["code"] in ("bad_request", "invalid_input", "model_not_found"), r.text


async def test_auth_is_decided_by_the_route_not_by_a_suffix(served):
    for path in ("/v2/models/digits-sklearn/versions/infer", "/v2/models/nothing/versions/infer", "/v2/models/x/infer/infer"):
        r = await served.client.get(path)
        assert r.status_code == 401, (path, r.status_code)
    assert (await served.client.get("/v2/health/ready")).status_code == 200  # open paths stay open


async def test_a_subject_without_a_tenant_claim_does_not_share_a_named_tenants_bucket(served):
    # tenant "acme" is in a tier of 2 requests; a token with sub "acme" and no tenant claim is another tenant
    for _ in range(5):
        r = await served.client.post("/v2/models/digits-sklearn/infer", json=oip([1, 64], ROW), headers=served.headers(tenant=None, sub="acme"))
        assert r.status_code == 200, r.text
    statuses = [
        (await served.client.post("/v2/models/digits-sklearn/infer", json=oip([1, 64], ROW), headers=served.headers(tenant="acme"))).status_code
        for _ in range(3)
    ]
    assert statuses[:2] == [200, 200] and statuses[2] == 429


async def test_client_caused_outcomes_never_count_against_a_canary(served):
    runtime = served.runtime
    source = MetricsSnapshotSource(runtime.metrics.directory)
    before = source.snapshot("digits-sklearn").get("v2")
    headers = {**served.headers(tenant="big"), "X-Request-Timeout-Ms": "0", "Cache-Control": "no-cache"}
    for _ in range(10):  # pinned to the canary, timed out by the client: 504 each
        r = await served.client.post("/v2/models/digits-sklearn/versions/v2/infer", json=oip([1, 64], ROW), headers=headers)
        assert r.status_code == 504 and r.json()["code"] == "deadline_exceeded"
    for _ in range(10):  # pinned, bad input
        r = await served.client.post("/v2/models/digits-sklearn/versions/v2/infer", json=oip([1, 64], [99.0] * 64),
                                     headers=served.headers(tenant="big"))
        assert r.status_code == 422
    after = source.snapshot("digits-sklearn").get("v2")
    errors = (after.errors if after else 0) - (before.errors if before else 0)
    requests = (after.requests if after else 0) - (before.requests if before else 0)
    assert (errors, requests) == (0, 0)  # pinned requests are not the route's choice; none is a server fault


async def test_a_cancelled_request_releases_its_version(served):
    """A request cancelled mid-body (the server's traffic timeout, a client gone) must not keep the
    version busy: unloading or promoting over it would wait forever."""
    entry = served.runtime.registry.get("digits-sklearn", "v2")
    headers = [(b"authorization", f"Bearer {served.token(tenant='big')}".encode()), (b"content-length", b"1000")]
    scope = {"type": "http", "method": "POST", "path": "/v2/models/digits-sklearn/versions/v2/infer", "headers": headers,
             "root_path": "", "query_string": b""}
    started = asyncio.Event()

    async def receive():
        started.set()
        await asyncio.Event().wait()  # the body never comes

    async def send(message):
        raise AssertionError("a cancelled request answers nothing")

    task = asyncio.create_task(served.app(scope, receive, send))
    await started.wait()
    assert entry.active == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert entry.active == 0


async def test_a_disconnecting_client_releases_its_version_and_is_not_answered(served):
    entry = served.runtime.registry.get("digits-sklearn", "v2")
    headers = [(b"authorization", f"Bearer {served.token(tenant='big')}".encode()), (b"content-length", b"1000")]
    scope = {"type": "http", "method": "POST", "path": "/v2/models/digits-sklearn/versions/v2/infer", "headers": headers,
             "root_path": "", "query_string": b""}
    messages = iter([{"type": "http.request", "body": b'{"inputs": [', "more_body": True}, {"type": "http.disconnect"}])
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    await served.app(scope, receive, send)
    assert entry.active == 0 and sent == []


async def test_a_percent_encoded_newline_cannot_forge_a_log_line(served):
    stream = io.StringIO()
    setup_logging(LogSettings(level="INFO"), stream)
    try:
        r = await served.client.get("/v2/models/x%0A2026-01-01 00:00:00,000 ERROR frontends.rest: forged/ready",
                                    headers=served.headers())
        assert r.status_code == 404
    finally:
        setup_logging(LogSettings())
    lines = stream.getvalue().splitlines()
    assert lines and not any("forged" in line and line.startswith("2026-01-01") for line in lines), lines
    assert any("\\n2026-01-01" in line for line in lines)


async def test_the_health_document_lists_background_tasks(served):
    doc = (await served.client.get("/v2/health/ready", headers=served.headers())).json()
    assert doc["ready"] is True and doc["background"].get("route_watcher") == "ok"
    assert (await served.client.get("/v2/health/ready")).json() == {"ready": True}  # open: the status only


async def test_without_auth_the_admin_api_is_not_served(model_store, tmp_path):
    async with serve_in_process(tmp_path, {"digits-sklearn": {"versions": ["v1"]}}, auth=False, routing=True) as s:
        r = await s.client.put("/admin/models/digits-sklearn/weights", json={"weights": {"v1": 100}})
        assert r.status_code == 404
        assert (await s.client.post("/v2/models/digits-sklearn/infer", json=oip([1, 64], ROW))).status_code == 200


async def test_one_callers_deadline_does_not_fail_another_waiting_on_the_same_computation(served):
    cache_module = pytest.importorskip("gateway.cache")
    cache = cache_module.PredictionCache(cache_module.CacheSettings())
    release = asyncio.Event()

    async def compute():
        await release.wait()
        return {"label": np.array([3])}

    loop = asyncio.get_running_loop()
    hurried = asyncio.create_task(cache.get_or_compute(b"k", compute, deadline=loop.time() + 0.05))
    patient = asyncio.create_task(cache.get_or_compute(b"k", compute))
    with pytest.raises(DeadlineExceeded):
        await hurried
    release.set()
    outputs, hit = await patient
    assert outputs["label"].tolist() == [3] and hit is False
    logging.getLogger(__name__).debug("patient caller got its answer after the hurried one timed out")
