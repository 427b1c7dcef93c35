"""The statistics extension over the real HTTP app in-process: what requests do to each number, in
Triton's format. Counters live in this process's metric files, so each test compares before and after."""

from __future__ import annotations

import asyncio
import math
import re
import time

import numpy as np
import pytest
import pytest_asyncio

from gateway.cache.settings import CacheSettings
from tests.inprocess import serve_in_process

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.cache_independent]
"""Its server sets the cache off itself; the other test asks for statistics only."""


def infer(rows: int) -> dict:
    data = [float((r + v) % 17) for r in range(rows) for v in range(64)]
    return {"inputs": [{"name": "pixels", "shape": [rows, 64], "datatype": "FP32", "data": data}]}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(model_store, tmp_path_factory):
    # The cache off: every request's rows reach the batcher, whose counts these tests read exactly.
    async with serve_in_process(tmp_path_factory.mktemp("statistics"), metrics=True, cache=CacheSettings(enabled=False)) as s:
        yield s


async def scrape(served) -> bytes:
    served.runtime.parts.metrics_current()
    body, _ = await asyncio.to_thread(served.runtime.metrics.exposition)
    return body


async def stats(served, path: str = "/v2/models/digits-sklearn/versions/v1/stats") -> dict:
    r = await served.client.get(path, headers=served.headers())
    assert r.status_code == 200, r.text
    [only] = r.json()["model_stats"]
    return only


def batches(s: dict) -> dict[int, dict]:
    return {b["batch_size"]: b for b in s["batch_stats"]}


async def test_requests_batches_and_failures_are_counted_in_tritons_format(served):
    before = await stats(served)
    started_ms = time.time() * 1000
    for rows in (1, 1, 1, 1, 1, 3):  # one after another: each its own batch
        r = await served.client.post("/v2/models/digits-sklearn/versions/v1/infer", json=infer(rows), headers=served.headers())
        assert r.status_code == 200, r.text
    bad = {"inputs": [{"name": "pixels", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    assert (await served.client.post("/v2/models/digits-sklearn/versions/v1/infer", json=bad, headers=served.headers())).status_code == 422
    after = await stats(served)

    assert (after["name"], after["version"]) == ("digits-sklearn", "v1")
    assert after["last_inference"] >= started_ms - 1
    assert after["inference_count"] - before["inference_count"] == 8  # rows
    assert after["execution_count"] - before["execution_count"] == 6
    was, now = before["inference_stats"], after["inference_stats"]
    for what, added in (("success", 6), ("fail", 1), ("queue", 6), ("compute_input", 6), ("compute_infer", 6), ("compute_output", 6),
                        ("cache_hit", 0), ("cache_miss", 0)):
        assert now[what]["count"] - was[what]["count"] == added, what
        assert (now[what]["ns"] > was[what]["ns"]) == (added > 0), what
    # A request's time covers its model call.
    assert now["success"]["ns"] - was["success"]["ns"] > now["compute_infer"]["ns"] - was["compute_infer"]["ns"]
    sizes_before, sizes_after = batches(before), batches(after)
    for size, added in ((1, 5), (3, 1)):
        old = sizes_before.get(size, {"compute_infer": {"count": 0, "ns": 0}})
        assert sizes_after[size]["compute_infer"]["count"] - old["compute_infer"]["count"] == added
        assert sizes_after[size]["compute_infer"]["ns"] > old["compute_infer"]["ns"]
        assert sizes_after[size]["compute_input"]["count"] == sizes_after[size]["compute_output"]["count"] == sizes_after[size]["compute_infer"]["count"]


async def test_requests_larger_than_a_batch_keep_batch_sizes_within_max_batch_size(served):
    """Clients choose their row counts; the batch sizes the metrics and statistics count must not follow them."""
    entry = served.runtime.registry.get("digits-sklearn", "v1")
    limit = entry.batcher.max_batch_size
    before = await stats(served)
    sizes = range(limit + 1, limit + 41)  # forty distinct counts above the batch size
    for rows in sizes:
        r = await served.client.post("/v2/models/digits-sklearn/versions/v1/infer", json=infer(rows), headers=served.headers())
        assert r.status_code == 200, r.text
        request = infer(rows)["inputs"][0]
        pixels = np.asarray(request["data"], dtype=np.float32).reshape(request["shape"])
        labels = next(o for o in r.json()["outputs"] if o["name"] == "label")["data"]
        assert labels == entry.runner.run(pixels)["label"].tolist()  # the answer of one unchunked call
    after = await stats(served)

    assert after["inference_count"] - before["inference_count"] == sum(sizes)
    assert after["execution_count"] - before["execution_count"] == sum(math.ceil(n / limit) for n in sizes)
    assert max(batches(after)) <= limit
    counted = {n: b["compute_infer"]["count"] - batches(before).get(n, {"compute_infer": {"count": 0}})["compute_infer"]["count"]
               for n, b in batches(after).items()}
    assert sum(n * c for n, c in counted.items()) == sum(sizes)  # Triton's batch_stats add up to the rows
    series = re.findall(r'^rtserve_batch_executions_total\{batch_size="(\d+)",model="digits-sklearn",version="v1"\}',
                        (await scrape(served)).decode(), re.MULTILINE)
    assert 0 < len(series) <= limit and max(map(int, series)) <= limit


async def test_a_model_lists_its_versions_and_all_models_every_version(served):
    r = await served.client.get("/v2/models/digits-sklearn/stats", headers=served.headers())
    assert r.status_code == 200 and [s["version"] for s in r.json()["model_stats"]] == ["v1", "v2"]
    r = await served.client.get("/v2/models/stats", headers=served.headers())
    assert {(s["name"], s["version"]) for s in r.json()["model_stats"]} == {("digits-sklearn", "v1"), ("digits-sklearn", "v2"),
                                                                            ("seq-torch", "v1")}


@pytest.mark.parametrize("path", ["/v2/models/no-such-model/stats", "/v2/models/digits-sklearn/versions/v9/stats"])
async def test_unknown_models_and_versions_are_404(served, path):
    r = await served.client.get(path, headers=served.headers())
    assert r.status_code == 404 and r.json()["code"] == "model_not_found"


async def test_statistics_need_a_token_and_a_get(served):
    assert (await served.client.get("/v2/models/stats")).status_code == 401
    r = await served.client.post("/v2/models/digits-sklearn/stats", headers=served.headers())
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


async def test_without_metrics_statistics_are_unavailable(model_store, tmp_path):
    async with serve_in_process(tmp_path, auth=False) as s:
        r = await s.client.get("/v2/models/digits-sklearn/stats")
        assert r.status_code == 503 and "RTSERVE_METRICS_ENABLED" in r.json()["error"]
