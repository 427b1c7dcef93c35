"""A job's batches are requests of the data plane: counted in its metrics (variant `batch`), but admitted once at
submission (no rate limit per batch), past the prediction cache, and waiting for room in a busy batcher."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from core.errors import QueueFull
from tests.jobs.support import wait_finished

BATCH_2XX = {"model": "digits-sklearn", "version": "v2", "variant": "batch", "status_class": "2xx", "cache": "bypass"}


async def requests_counted(app, labels: dict[str, str]) -> float:
    """rtserve_requests_total for exactly these labels, as the metrics endpoint shows it."""
    text = (await app.client.get("/metrics", headers=app.headers())).text
    return sum(sample.value for family in text_string_to_metric_families(text) if family.name == "rtserve_requests"
               for sample in family.samples if sample.name == "rtserve_requests_total" and sample.labels == labels)


async def errors_shown(app, variant: str) -> list[dict[str, str]]:
    text = (await app.client.get("/metrics", headers=app.headers())).text
    return [sample.labels for family in text_string_to_metric_families(text) if family.name == "rtserve_errors"
            for sample in family.samples if sample.labels.get("variant") == variant and sample.value]


async def test_batches_are_counted_requests_limited_once_and_leave_the_cache_alone(app, digits, monkeypatch):
    batch = app.headers("batch")
    admission = app.runtime.pipeline.admission
    original = admission.limit
    limited: list[str] = []
    monkeypatch.setattr(admission, "limit", lambda admitted: limited.append(admitted.tenant) or original(admitted))
    before = await requests_counted(app, BATCH_2XX)
    r = await app.client.post("/v2/jobs", headers=batch, json={"model": "digits-sklearn", "version": "v2",
                                                                "inputs": digits[:300].tolist()})
    job = await wait_finished(app.client, r.json()["id"], batch)
    assert (job["state"], job["rows_failed"]) == ("succeeded", 0)
    assert limited == ["acme"]  # the submission; its five batches were not limited again
    assert await requests_counted(app, BATCH_2XX) - before == 5  # 300 rows in batches of 64
    assert app.runtime.pipeline.in_flight == 0
    r = await app.client.post("/predict", headers=app.headers(), json={"model": "digits-sklearn", "version": "v2",
                                                                       "inputs": digits[:1].tolist()})
    assert r.status_code == 200 and r.headers["x-cache"] == "miss"  # the job's rows did not fill the cache


async def test_a_batcher_full_of_real_time_work_is_waited_for_not_an_error(app, digits, monkeypatch):
    batcher = app.runtime.registry.get("digits-sklearn", "v2").batcher
    original = batcher.submit
    refusals = []

    async def busy_at_first(rows, deadline=None, priority=0):
        if len(refusals) < 3:
            refusals.append(priority)
            raise QueueFull("queue is full")
        return await original(rows, deadline, priority)

    monkeypatch.setattr(batcher, "submit", busy_at_first)
    batch = app.headers("batch")
    r = await app.client.post("/v2/jobs", headers=batch, json={"model": "digits-sklearn", "version": "v2",
                                                                "inputs": digits[:100].tolist()})
    job = await wait_finished(app.client, r.json()["id"], batch)
    assert (job["state"], job["rows_done"], job["rows_failed"]) == ("succeeded", 100, 0)
    assert refusals == [batcher.priority_levels] * 3  # the lowest level
    assert await errors_shown(app, "batch") == []
