"""Batch jobs through the HTTP app: results equal real-time ones, bad rows fail alone, jobs belong to tenants."""

from __future__ import annotations

import asyncio
import io

import numpy as np

from fuzz.seeds import npy_header, npz_bomb
from gateway.admission import Admitted
from gateway.settings import LimitSettings
from jobs.rows import from_json
from jobs.runner import JobRunner
from jobs.settings import JobSettings
from jobs.store import LocalJobStore
from runners.registry import VersionState
from tests.jobs.support import lines, predict, wait_finished


async def test_json_job_equals_real_time_and_bad_rows_fail_alone(app, digits):
    batch = app.headers("batch")
    rows = digits[:300].tolist()
    rows[7] = rows[7][:10]  # wrong length
    rows[11] = [17.0] * 64  # over the signature's max_value
    rows[12] = ["x"] * 64  # not numbers
    r = await app.client.post("/v2/jobs", headers=batch, json={"model": "digits-sklearn", "version": "v2", "inputs": rows})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v2/jobs/{r.json()['id']}"
    job = await wait_finished(app.client, r.json()["id"], batch)
    assert (job["state"], job["rows"], job["rows_done"], job["rows_failed"]) == ("succeeded", 300, 300, 3)
    assert job["rows_per_second"] > 0 and job["expires_at"] > job["finished_at"]

    results = await app.client.get(f"/v2/jobs/{job['id']}/results", headers=batch)
    assert results.status_code == 200 and results.headers["content-type"] == "application/x-ndjson"
    got = lines(results.content)
    assert [line["row"] for line in got] == list(range(300))
    assert {i: got[i]["code"] for i in (7, 11, 12)} == {7: "invalid_input", 11: "invalid_input", 12: "invalid_input"}
    assert "64 values" in got[7]["error"] and "<= 16" in got[11]["error"]
    good = [i for i in range(300) if i not in (7, 11, 12)]
    expected = await predict(app.client, app.headers("predict"), "digits-sklearn", "v2", [rows[i] for i in good])
    assert [got[i]["outputs"]["label"] for i in good] == expected["label"]
    # Equal up to float32 rounding: a matrix product's summation order depends on the batch it ran in.
    np.testing.assert_allclose([got[i]["outputs"]["probabilities"] for i in good], expected["probabilities"], rtol=1e-5, atol=1e-7)


async def test_npy_and_npz_uploads_of_variable_length_rows(app):
    batch = app.headers("batch")
    rng = np.random.default_rng(3)
    tokens = np.zeros((40, 12), dtype=np.int64)
    for i, n in enumerate(rng.integers(1, 13, size=40)):
        tokens[i, :n] = rng.integers(1, 21, size=n)
    tokens[5, 0] = 99  # over the vocabulary: that row fails
    npy = io.BytesIO()
    np.save(npy, tokens)
    npz = io.BytesIO()
    np.savez(npz, tokens=tokens)
    expected = await predict(app.client, app.headers("predict"), "seq-torch", "v1", [t.tolist() for i, t in enumerate(tokens) if i != 5])
    for body in (npy.getvalue(), npz.getvalue()):
        r = await app.client.post("/v2/jobs", params={"model": "seq-torch"}, headers=batch, content=body)
        assert r.status_code == 202, r.text
        job = await wait_finished(app.client, r.json()["id"], batch)
        assert (job["state"], job["version"], job["rows_failed"]) == ("succeeded", "v1", 1)
        got = lines((await app.client.get(f"/v2/jobs/{job['id']}/results", headers=batch)).content)
        assert got[5]["code"] == "invalid_input"
        assert [g["outputs"]["label"] for g in got if "outputs" in g] == expected["label"]


async def test_submissions_that_cannot_be_rows_are_refused(app):
    batch = app.headers("batch")
    cases = [
        ({"json": {"model": "digits-sklearn"}}, 400, "bad_request"),
        ({"json": {"model": "digits-sklearn", "inputs": []}}, 422, "invalid_input"),
        ({"json": {"model": "nope", "inputs": [[0] * 64]}}, 404, "model_not_found"),
        ({"content": np.lib.format.MAGIC_PREFIX + b"garbage"}, 400, "bad_request"),
        ({"content": npy_header((10**12, 64))}, 422, "invalid_input"),  # np.load allocated it: 500
        ({"content": npz_bomb("pixels", (1_000_000, 64), "<f8", 512 << 20)}, 413, "payload_too_large"),
        ({"json": {"model": "digits-ensemble", "inputs": [[0] * 64]}}, 422, "mode_not_supported"),
    ]
    for kwargs, status, code in cases:
        r = await app.client.post("/v2/jobs", headers=batch, params={"model": "digits-sklearn"}, **kwargs)
        assert (r.status_code, r.json()["code"]) == (status, code), r.text


async def test_ids_the_server_never_makes_are_not_found_before_any_file_is_touched(app, monkeypatch):
    batch = app.headers("batch")
    store = app.runtime.parts.jobs.store
    monkeypatch.setattr(store, "get", None)  # reaching the store at all would now raise
    for job_id in ("a" * 300, "A" * 24, "0" * 23, "g" * 24, "%2e%2e", "%00"):
        for method, path in (("GET", ""), ("GET", "/results"), ("POST", "/cancel")):
            r = await app.client.request(method, f"/v2/jobs/{job_id}{path}", headers=batch)
            assert (r.status_code, r.json()["code"]) == (404, "not_found"), (job_id, path, r.text)
            assert len(r.json()["error"]) < 100


async def test_scope_and_tenant_ownership(app, digits):
    r = await app.client.post("/v2/jobs", json={"model": "digits-sklearn", "inputs": digits[:5].tolist()})
    assert r.status_code == 401
    r = await app.client.post("/v2/jobs", headers=app.headers("predict"), json={"model": "digits-sklearn", "inputs": [[0] * 64]})
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    r = await app.client.post("/v2/jobs", headers=app.headers("batch"), json={"model": "digits-sklearn", "inputs": digits[:5].tolist()})
    job_id = r.json()["id"]
    await wait_finished(app.client, job_id, app.headers("batch"))
    other = app.headers("batch", tenant="globex")
    for method, path in (("GET", ""), ("GET", "/results"), ("POST", "/cancel")):
        r = await app.client.request(method, f"/v2/jobs/{job_id}{path}", headers=other)
        assert (r.status_code, r.json()["code"]) == (404, "not_found"), path
    r = await app.client.delete(f"/v2/jobs/{job_id}", headers=app.headers("batch"))
    assert (r.status_code, r.headers["allow"]) == (405, "GET, HEAD")


async def test_cancel_keeps_results_so_far_and_running_jobs_have_no_results_yet(app, digits):
    batch = app.headers("batch")
    rows = np.tile(digits, (60, 1))  # 107,820 rows
    upload = io.BytesIO()
    np.save(upload, rows)
    r = await app.client.post("/v2/jobs", params={"model": "digits-sklearn"}, headers=batch, content=upload.getvalue())
    job_id = r.json()["id"]
    early = await app.client.get(f"/v2/jobs/{job_id}/results", headers=batch)
    assert (early.status_code, early.json()["code"]) == (409, "conflict")
    r = await app.client.post(f"/v2/jobs/{job_id}/cancel", headers=batch)
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    job = await wait_finished(app.client, job_id, batch)
    assert job["state"] == "cancelled" and job["rows_done"] < len(rows)
    got = lines((await app.client.get(f"/v2/jobs/{job_id}/results", headers=batch)).content)
    assert [g["row"] for g in got] == list(range(job["rows_done"]))
    r = await app.client.post(f"/v2/jobs/{job_id}/cancel", headers=batch)
    assert (r.status_code, r.json()["code"]) == (409, "conflict")


async def test_unloading_a_version_fails_the_rest_of_its_job(app, digits):
    batch = app.headers("batch")
    upload = io.BytesIO()
    np.save(upload, np.tile(digits, (60, 1)))
    r = await app.client.post("/v2/jobs", params={"model": "digits-sklearn", "version": "v2"}, headers=batch,
                              content=upload.getvalue())
    job_id = r.json()["id"]
    runner = app.runtime.parts.jobs
    while (await runner.get(job_id)).rows_done == 0:
        await asyncio.sleep(0.005)
    await asyncio.wait_for(app.runtime.registry.unload("digits-sklearn", "v2"), timeout=5)
    job = await wait_finished(app.client, job_id, batch)
    assert job["state"] == "failed" and "unloaded while the job ran" in job["error"]
    got = lines((await app.client.get(f"/v2/jobs/{job_id}/results", headers=batch)).content)
    assert len(got) == job["rows"] == job["rows_done"]
    assert got[-1]["code"] == "model_not_ready" and "unloaded" in got[-1]["error"]
    assert job["rows_failed"] == sum("error" in g for g in got) > 0


async def test_a_tenant_has_a_bounded_number_of_active_jobs(app, digits, monkeypatch):
    batch = app.headers("batch", tenant="small")
    runner = app.runtime.parts.jobs
    monkeypatch.setattr(runner.settings, "max_active_per_tenant", 1)
    upload = io.BytesIO()
    np.save(upload, np.tile(digits, (30, 1)))
    first = await app.client.post("/v2/jobs", params={"model": "digits-sklearn"}, headers=batch, content=upload.getvalue())
    second = await app.client.post("/v2/jobs", params={"model": "digits-sklearn"}, headers=batch, content=upload.getvalue())
    assert (second.status_code, second.json()["code"]) == (429, "rate_limited")
    await app.client.post(f"/v2/jobs/{first.json()['id']}/cancel", headers=batch)
    await wait_finished(app.client, first.json()["id"], batch)
    third = await app.client.post("/v2/jobs", params={"model": "digits-sklearn"}, headers=batch, content=upload.getvalue())
    assert third.status_code == 202


async def test_a_job_stops_when_its_results_outgrow_what_its_tenant_may_keep(app, digits, monkeypatch):
    batch = app.headers("batch", tenant="thrifty")
    monkeypatch.setattr(app.runtime.parts.jobs.settings, "max_result_bytes_per_tenant", 50_000)
    r = await app.client.post("/v2/jobs", headers=batch, json={"model": "digits-sklearn", "inputs": digits.tolist()})
    job = await wait_finished(app.client, r.json()["id"], batch)
    assert job["state"] == "failed" and "results reached the tenant's limit of 50000 bytes" in job["error"]
    assert 0 < job["rows_done"] < len(digits)
    got = lines((await app.client.get(f"/v2/jobs/{job['id']}/results", headers=batch)).content)
    assert [g["row"] for g in got] == list(range(job["rows_done"]))
    r = await app.client.post("/v2/jobs", headers=batch, json={"model": "digits-sklearn", "inputs": digits[:5].tolist()})
    assert (r.status_code, r.json()["code"]) == (429, "rate_limited") and "bytes of results" in r.json()["error"]


async def test_results_are_sent_in_pieces_and_count_against_the_rate_limit(app, digits, monkeypatch):
    batch = app.headers("batch")
    r = await app.client.post("/v2/jobs", headers=batch, json={"model": "digits-sklearn", "inputs": digits.tolist()})
    job = await wait_finished(app.client, r.json()["id"], batch)
    limited: list[str] = []
    admission = app.runtime.pipeline.admission
    original = admission.limit
    monkeypatch.setattr(admission, "limit", lambda admitted: limited.append(admitted.tenant) or original(admitted))
    monkeypatch.setattr("jobs.store.READ_CHUNK_BYTES", 4096)
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": f"/v2/jobs/{job['id']}/results", "root_path": "", "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in batch.items()]}
    await app.app(scope, receive, send)  # the ASGI messages themselves: httpx's in-process transport joins the body
    start, *bodies = sent
    assert start["status"] == 200 and b"content-length" not in dict(start["headers"])
    assert limited == ["acme"]
    assert len(bodies) > 10 and max(len(b["body"]) for b in bodies) <= 4096
    assert [b.get("more_body", False) for b in bodies] == [True] * (len(bodies) - 1) + [False]
    assert [g["row"] for g in lines(b"".join(b["body"] for b in bodies))] == list(range(len(digits)))


async def test_metrics_count_jobs_by_state_and_rows(app, digits):
    batch = app.headers("batch")
    r = await app.client.post("/v2/jobs", headers=batch, json={"model": "digits-sklearn", "version": "v1", "inputs": digits[:50].tolist()})
    await wait_finished(app.client, r.json()["id"], batch)
    body = (await app.client.get("/metrics", headers=app.headers())).text  # the API port's, switched on in-process
    assert 'rtserve_jobs_total{state="succeeded"}' in body
    assert 'rtserve_job_rows_total{model="digits-sklearn",outcome="ok",version="v1"}' in body


async def test_modes_are_in_model_metadata_and_enforced_in_real_time(app):
    meta = (await app.client.get("/v2/models/digits-ensemble/versions/v1", headers=app.headers())).json()
    assert meta["parameters"] == {"modes": ["real_time", "streaming"]}
    meta = (await app.client.get("/v2/models/digits-sklearn", headers=app.headers())).json()
    assert meta["parameters"] == {"modes": ["real_time", "batch", "streaming"]}
    entry = app.runtime.registry.get("digits-sklearn", "v1")
    assert entry.state is VersionState.READY
    entry.modes = ("batch",)  # as a version built for batch only would declare
    r = await app.client.post("/predict", headers=app.headers(), json={"model": "digits-sklearn", "version": "v1", "inputs": [[0] * 64]})
    assert (r.status_code, r.json()["code"]) == (422, "mode_not_supported")


async def test_a_job_runs_in_the_gaps_between_real_time_requests(app, digits, tmp_path):
    pipeline = app.runtime.pipeline
    store = LocalJobStore(tmp_path / "gap-jobs", 60)

    def runner(busy_step_s: float) -> JobRunner:
        return JobRunner(pipeline, store, JobSettings(busy_step_s=busy_step_s, flush_rows=64))

    patient = runner(busy_step_s=60)
    entry = patient.choose("digits-sklearn", "v1", None)
    rows = from_json(entry.runner.input_spec, digits[:640].tolist(), 10_000, LimitSettings())
    with pipeline.record():  # a real-time request in flight: no gap
        job = await patient.submit(entry, Admitted("acme", None), rows)
        await asyncio.sleep(0.3)
        assert (await patient.get(job.id)).rows_done == 0
    for _ in range(300):  # the request is answered: the job takes the gap
        if (await patient.get(job.id)).state.finished:
            break
        await asyncio.sleep(0.01)
    assert (await patient.get(job.id)).rows_done == 640

    steady = runner(busy_step_s=0.1)
    with pipeline.record():  # real-time traffic without a gap: still one batch (64 rows) per busy_step_s
        job = await steady.submit(entry, Admitted("acme", None), rows)
        await asyncio.sleep(0.45)
        done = (await steady.get(job.id)).rows_done
    await steady.stop()
    assert 64 <= done <= 5 * 64, done
