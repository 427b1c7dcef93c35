"""Canaries in-process, with metrics: what status shows to judge like for like, and one rollout at a time per model."""

from __future__ import annotations

import asyncio
import json

import pytest
import pytest_asyncio

from tests.inprocess import serve_in_process

pytestmark = pytest.mark.asyncio(loop_scope="module")
MODEL = "digits-sklearn"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(model_store, tmp_path_factory):
    async with serve_in_process(tmp_path_factory.mktemp("fair"), {MODEL: {"versions": ["v1", "v2"], "weights": {"v1": 100}}},
                                routing=True, metrics=True) as s:
        yield s


async def until(check, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (await check() if asyncio.iscoroutinefunction(check) else check()):
        assert loop.time() < deadline, "not reached in time"
        await asyncio.sleep(0.05)


def infer(row: int) -> dict:
    return {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [float((row + i) % 17) for i in range(64)]}]}


async def test_a_canary_and_an_experiment_on_one_model_refuse_each_other(served):
    admin = served.headers("admin")
    r = await served.client.post(f"/admin/models/{MODEL}/experiment", json={"variants": {"v1": 50, "v2": 50}}, headers=admin)
    assert r.status_code == 201, r.text
    r = await served.client.post(f"/admin/models/{MODEL}/canary", json={"version": "v2", "hold_s": 600}, headers=admin)
    assert r.status_code == 409 and "experiment" in r.json()["error"]
    assert (await served.client.delete(f"/admin/models/{MODEL}/experiment", headers=admin)).status_code == 200

    r = await served.client.post(f"/admin/models/{MODEL}/canary", json={"version": "v2", "hold_s": 600}, headers=admin)
    assert r.status_code == 201, r.text
    try:
        r = await served.client.post(f"/admin/models/{MODEL}/experiment", json={"variants": {"v1": 50, "v2": 50}}, headers=admin)
        assert r.status_code == 409 and "canary" in r.json()["error"]
        assert (await served.client.get(f"/admin/models/{MODEL}", headers=admin)).status_code in (404, 405)
        doc = (await served.client.get("/admin/models", headers=admin)).json()[MODEL]
        assert doc["experiment"] is None and doc["weights"] == {"v1": 95.0, "v2": 5.0}  # the weights actually served
    finally:
        assert (await served.client.delete(f"/admin/models/{MODEL}/canary", headers=admin)).status_code == 200


async def test_canary_status_shows_each_versions_latency_uncached_and_overall(served):
    admin = served.headers("admin")
    r = await served.client.post(f"/admin/models/{MODEL}/canary", json={"version": "v2", "steps": [50, 100], "hold_s": 600},
                                 headers=admin)
    assert r.status_code == 201, r.text
    try:
        await until(lambda: served.runtime.router.routes(MODEL).weights == {"v1": 50.0, "v2": 50.0})
        for i in range(60):  # the same few rows again and again: stable soon answers them from the cache
            r = await served.client.post(f"/v2/models/{MODEL}/infer", json=infer(i % 3), headers=served.headers())
            assert r.status_code == 200, r.text
        status: dict = {}
        cached = served.runtime.pipeline.cache is not None  # RTSERVE_TEST_CACHE=off runs it without hits

        async def counted() -> bool:
            status.update((await served.client.get(f"/admin/models/{MODEL}/canary", headers=admin)).json())
            return all(status["outcomes"].get(v, {}).get("cache_hits" if cached else "requests") for v in ("v1", "v2"))

        await until(counted)
        for version in ("v1", "v2"):
            o = status["outcomes"][version]
            assert o["requests"] > o["cache_hits"] > 0 if cached else o["requests"] > o["cache_hits"] == 0
            assert o["p95_ms"] > 0 and o["uncached_p95_ms"] > 0
        assert status["thresholds"]["max_p95_ratio"] == 1.2
    finally:
        assert (await served.client.delete(f"/admin/models/{MODEL}/canary", headers=admin)).status_code == 200


def distinct_row(i: int) -> dict:
    """A row no other request of the module sent: answered by the model, not the cache."""
    return {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [float((i + j) % 16) + i / 1e5 for j in range(64)]}]}


async def test_canary_status_plots_its_steps_against_the_limits(served, tmp_path):
    """Runs last in the module: the canary promotes v2, which leaves v1 without traffic."""
    from PIL import Image

    from app import canary_plot

    admin = served.headers("admin")
    r = await served.client.post(f"/admin/models/{MODEL}/canary", headers=admin, json={
        "version": "v2", "steps": [50, 100], "hold_s": 0, "min_requests": 20,
        "thresholds": {"p95_slack_ms": 1000}})  # a busy shared machine: judged, never rolled back on noise
    assert r.status_code == 201, r.text
    doc: dict = {}
    sent = [0]

    async def finished() -> bool:
        for _ in range(10):
            r = await served.client.post(f"/v2/models/{MODEL}/infer", json=distinct_row(sent[0]), headers=served.headers())
            assert r.status_code == 200, r.text
            sent[0] += 1
        doc.update((await served.client.get(f"/admin/models/{MODEL}/canary", headers=admin)).json())
        return doc["status"] != "running"

    await until(finished, timeout=60)
    assert doc["status"] == "promoted", doc["decisions"]
    judged = [d for d in doc["decisions"] if d["action"] in canary_plot.JUDGED]
    assert [d["action"] for d in judged] == ["advance", "promote"]

    path = tmp_path / "canary.png"
    drawn = canary_plot.write(MODEL, doc, path)
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG" and json.loads(img.text["Description"]) == drawn
    assert drawn == ["v2 traffic %", "canary v2 uncached p95", "stable v1 uncached p95", "canary p95, every request",
                     "stable p95, every request", "limit 1.2 x stable + 1000 ms", "canary error rate", "stable error rate",
                     "limit stable + 0.1 %"]

    fig = canary_plot.figure(MODEL, doc)
    lines = {line.get_label(): line for ax in fig.axes for line in ax.lines}
    at = [d["at"] - doc["started_at"] for d in judged]
    assert list(lines["canary v2 uncached p95"].get_xdata()) == at
    assert list(lines["canary v2 uncached p95"].get_ydata()) == [d["numbers"]["canary_p95_ms"] for d in judged]
    stable = [d["numbers"]["stable_p95_ms"] for d in judged]
    assert list(lines["limit 1.2 x stable + 1000 ms"].get_ydata()) == pytest.approx([s * 1.2 + 1000 for s in stable])
    assert list(lines["canary error rate"].get_ydata()) == [0.0, 0.0]
    weights = lines["v2 traffic %"].get_ydata()
    assert weights[0] == 50.0 and 100.0 in weights and weights[-1] == 100.0  # 50 %, then 100 % after the advance
