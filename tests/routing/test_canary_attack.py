"""A client cannot move a running canary: every kind of bad request, sent through the route while a
canary takes all the traffic, leaves the canary's judged numbers as they were and the canary running.

Before, a shape with a zero and a huge dimension passed the limits and broke `reshape` in the decoder:
a 500 that counted as the routed version's fault, so fifteen of them rolled a healthy canary back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import orjson
import pytest
import pytest_asyncio

import pipeline.dataplane
from gateway.settings import LimitSettings
from tests.inprocess import InProcess, serve_in_process
from tests.routing.support import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

MODEL = "digits-sklearn"
INFER = f"/v2/models/{MODEL}/infer"
ROW = [float(v % 17) for v in range(64)]
HUGE = 2**63 - 1


def oip(shape: list, data: list, datatype: str = "FP32", **extra) -> bytes:
    return orjson.dumps({"inputs": [{"name": "pixels", "shape": shape, "datatype": datatype, "data": data}], **extra})


def binary(shape: list, raw: bytes) -> tuple[bytes, dict[str, str]]:
    header = orjson.dumps({"inputs": [{"name": "pixels", "shape": shape, "datatype": "FP32",
                                       "parameters": {"binary_data_size": len(raw)}}]})
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


ZERO_BINARY = binary([1, 0, HUGE], b"")
# (what, path, body, extra headers, expected status): each a mistake of the client's, sent without a version
ATTACKS: list[tuple[str, str, bytes, dict[str, str], int]] = [
    ("zero and huge dimensions", INFER, oip([1, 0, HUGE], []), {}, 422),
    ("zero dimension first", INFER, oip([0, HUGE], []), {}, 422),
    ("zero and huge dimensions, binary", INFER, ZERO_BINARY[0], ZERO_BINARY[1], 422),
    ("overflowing dimensions", INFER, oip([2**40, 2**40, 2**40], ROW), {}, 422),
    ("negative dimension", INFER, oip([1, -64], ROW), {}, 400),
    ("shape of booleans", INFER, oip([True, 64], ROW), {}, 400),
    ("shape not a list", INFER, oip("1x64", ROW), {}, 400),  # type: ignore[arg-type]
    ("unknown datatype", INFER, oip([1, 64], ROW, "FP99"), {}, 422),
    ("datatype the model does not take", INFER, oip([1, 64], [int(v) for v in ROW], "INT64"), {}, 422),
    ("shape the model does not take", INFER, oip([1, 63], ROW[:63]), {}, 422),
    ("data does not fill the shape", INFER, oip([2, 64], ROW), {}, 422),
    ("ragged data", INFER, oip([2, 64], [ROW, ROW[:3]]), {}, 422),
    ("values out of the signature's range", INFER, oip([1, 64], [99.0] * 64), {}, 422),
    ("strings for numbers", INFER, oip([1, 64], ["a"] * 64), {}, 422),
    ("too many rows", INFER, oip([10**9, 64], ROW), {}, 422),
    ("oversize body", INFER, b"[" + b"1," * 200_000 + b"1]", {}, 413),
    ("bad JSON", INFER, b'{"inputs": [', {}, 400),
    ("not an object", INFER, b"[]", {}, 400),
    ("unknown input", INFER, orjson.dumps({"inputs": [{"name": "nope", "shape": [1, 64], "datatype": "FP32", "data": ROW}]}), {}, 422),
    ("unknown output", INFER, oip([1, 64], ROW, outputs=[{"name": "nope"}]), {}, 400),
    ("binary length past the body", INFER, oip([1, 64], ROW), {"Inference-Header-Content-Length": "999999"}, 400),
    ("bad timeout header", INFER, oip([1, 64], ROW), {"X-Request-Timeout-Ms": "soon"}, 400),
    ("bad schedule parameter", INFER, oip([1, 64], ROW, parameters={"priority": -1}), {}, 400),
    ("its own deadline already passed", INFER, oip([1, 64], ROW), {"X-Request-Timeout-Ms": "0", "Cache-Control": "no-cache"}, 504),
    ("/predict: an empty row", "/predict", orjson.dumps({"model": MODEL, "inputs": [[]]}), {}, 422),
    ("/predict: short rows", "/predict", orjson.dumps({"model": MODEL, "inputs": [ROW[:63]]}), {}, 422),
    ("/predict: strings", "/predict", orjson.dumps({"model": MODEL, "inputs": [["a"] * 64]}), {}, 422),
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(model_store, tmp_path_factory) -> AsyncIterator[InProcess]:
    async with serve_in_process(tmp_path_factory.mktemp("canary-attack"), {MODEL: {"versions": ["v1", "v2"], "weights": {"v1": 100}}},
                                routing=True, metrics=True, limits=LimitSettings(max_body_bytes=256 * 1024)) as s:
        yield s


async def admin(served: InProcess, method: str, path: str, json: dict | None = None) -> dict:
    r = await served.client.request(method, path, json=json, headers=served.headers(scopes="admin"))
    assert r.status_code < 300, r.text
    return r.json()


async def canary_outcomes(served: InProcess) -> tuple[str, dict[str, int]]:
    served.runtime.parts.metrics_current()
    status = await admin(served, "GET", f"/admin/models/{MODEL}/canary")
    return status["status"], status["outcomes"].get("v2", {"requests": 0, "server_faults": 0, "client_errors": 0, "shed": 0,
                                                           "internal_errors": 0})


@pytest_asyncio.fixture(loop_scope="module")
async def canary(served) -> AsyncIterator[None]:
    """A canary of v2 at its last step (all routed traffic), held long enough that only a fault can end it."""
    await admin(served, "POST", f"/admin/models/{MODEL}/canary",
                {"version": "v2", "steps": [100], "hold_s": 3600, "min_requests": 10**6})

    async def routed_to_v2() -> bool:
        r = await served.client.post(INFER, content=oip([1, 64], ROW), headers=served.headers())
        return r.status_code == 200 and r.headers["x-model-version"] == "v2"

    deadline = asyncio.get_running_loop().time() + 10
    while not await routed_to_v2():
        assert asyncio.get_running_loop().time() < deadline, "the canary's weights never reached the router"
        await asyncio.sleep(0.05)
    try:
        yield
    finally:
        status = await admin(served, "GET", f"/admin/models/{MODEL}/canary")
        if status["status"] == "running":
            await admin(served, "DELETE", f"/admin/models/{MODEL}/canary")


async def test_client_mistakes_sent_to_a_canary_leave_its_numbers_and_it_keeps_running(served, canary):
    _, before = await canary_outcomes(served)
    headers = served.headers()
    for what, path, body, extra, expected in ATTACKS:
        for _ in range(15 if "zero" in what else 2):
            r = await served.client.post(path, content=body, headers={**headers, **extra})
            assert r.status_code == expected, (what, r.status_code, r.text)
            assert r.json()["code"] != "internal_error", what
    # The same zero-size shape as one item of a stream: answered inline as the client's mistake.
    r = await served.client.post(f"{INFER}/stream", content=oip([1, 0, HUGE], []) + b"\n" + oip([1, 64], ROW) + b"\n",
                                 headers=headers)
    items = [orjson.loads(line) for line in r.content.splitlines() if line]
    assert r.status_code == 200 and items[0]["code"] == "invalid_input" and "outputs" in items[1], items
    await asyncio.sleep(0.5)  # five of the controller's checks (every 0.1 s) look at the numbers
    status, after = await canary_outcomes(served)
    assert status == "running"
    assert after["server_faults"] == before["server_faults"]
    assert after["internal_errors"] == before["internal_errors"]
    # every attack that reached the route is a client error of the canary, never a judged outcome
    judged = {k: after[k] - before[k] for k in ("requests", "client_errors", "shed")}
    assert judged["requests"] == judged["client_errors"] + 1, judged  # the one good item of the stream


async def test_a_request_path_bug_is_an_internal_error_never_the_canarys_fault(served, canary, monkeypatch):
    """An exception nobody anticipated, after the route chose the canary: a 500 counted as internal, not judged."""

    def broken(*args, **kwargs):
        raise ValueError("a validator bug")

    monkeypatch.setattr(pipeline.dataplane, "check_inputs", broken)
    _, before = await canary_outcomes(served)
    for _ in range(15):
        r = await served.client.post(INFER, content=oip([1, 64], ROW), headers=served.headers())
        assert r.status_code == 500 and r.json()["code"] == "internal_error"
    await asyncio.sleep(0.5)
    status, after = await canary_outcomes(served)
    assert status == "running"
    assert after["server_faults"] == before["server_faults"]
    assert after["internal_errors"] - before["internal_errors"] == 15


async def test_a_model_fault_still_rolls_the_canary_back(served, canary, monkeypatch):
    """The judged side still works: the model's own call raising is the version's fault."""
    runner = served.runtime.registry.versions(MODEL)["v2"].runner

    def broken(batch: np.ndarray):
        raise RuntimeError("the model is broken")

    monkeypatch.setattr(runner, "run", broken)
    codes = set()
    for _ in range(200):
        r = await served.client.post(INFER, content=oip([1, 64], ROW), headers={**served.headers(), "Cache-Control": "no-cache"})
        served.runtime.parts.metrics_current()
        if r.status_code == 200:  # rolled back: the route chose v1 again
            break
        codes.add(r.json()["code"])
        await asyncio.sleep(0.01)
    assert codes == {"model_error"} and r.headers["x-model-version"] == "v1"
    await eventually(lambda: served.runtime.router.routes(MODEL).canary.status == "rolled_back", 5.0, "the rollback")
