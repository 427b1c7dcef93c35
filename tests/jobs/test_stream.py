"""The NDJSON stream endpoint: one result line per item with its id, bad items fail alone, idle and disconnect handled."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import orjson

from tests.jobs.support import lines, predict

PATH = "/v2/models/digits-sklearn/versions/v2/infer/stream"


def item(row: list[float], item_id: str | None = None) -> bytes:
    doc = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": row}]}
    return orjson.dumps({**doc, "id": item_id} if item_id else doc)


async def test_each_item_answers_on_its_own_line_with_its_id(app, digits):
    rows = digits[:20].tolist()
    body = [item(r, f"item-{i}") for i, r in enumerate(rows)]
    body[3] = b"{not json"
    body[4] = item([1.0] * 10, "short")
    body.insert(6, b"")  # empty lines are skipped
    body[9] = item(rows[8])  # no id: the stream's request id and the item's number
    r = await app.client.post(PATH, headers={**app.headers(), "X-Request-ID": "s1"}, content=b"\n".join(body))
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    assert r.headers["x-model-version"] == "v2"
    got = {doc["id"]: doc for doc in lines(r.content)}
    assert len(got) == 20
    assert got["s1-3"]["code"] == "bad_request"
    assert got["short"]["code"] == "invalid_input"
    assert "outputs" in got["s1-8"]
    expected = await predict(app.client, app.headers(), "digits-sklearn", "v2", rows)
    for i in set(range(20)) - {3, 4, 8}:
        labels = {o["name"]: o["data"] for o in got[f"item-{i}"]["outputs"]}
        assert labels["label"] == [expected["label"][i]]
        np.testing.assert_allclose(labels["probabilities"], expected["probabilities"][i], rtol=1e-5, atol=1e-7)


async def test_refusals_before_the_stream_starts_are_plain_errors(app):
    r = await app.client.post(PATH, content=item([0.0] * 64))
    assert (r.status_code, r.json()["code"]) == (401, "unauthorized")
    r = await app.client.get(PATH, headers=app.headers())
    assert (r.status_code, r.headers["allow"]) == (405, "POST")
    r = await app.client.post("/v2/models/nope/infer/stream", headers=app.headers(), content=item([0.0] * 64))
    assert (r.status_code, r.json()["code"]) == (404, "model_not_found")
    app.runtime.registry.get("digits-ensemble", "v1").modes = ("real_time",)
    r = await app.client.post("/v2/models/digits-ensemble/infer/stream", headers=app.headers(), content=item([0.0] * 64))
    assert (r.status_code, r.json()["code"]) == (422, "mode_not_supported")


async def call(app, receive_messages, sent: list[dict]) -> None:
    """The ASGI app with a scripted client: `receive_messages` is awaited for each receive()."""
    scope = {"type": "http", "method": "POST", "path": PATH, "root_path": "", "query_string": b"",
             "headers": [(b"authorization", f"Bearer {app.token()}".encode())]}

    async def send(message: dict) -> None:
        sent.append(message)

    await app.app(scope, receive_messages, send)


async def test_an_idle_stream_ends_with_a_timeout_line(app, digits):
    messages = [{"type": "http.request", "body": item(digits[0].tolist(), "a") + b"\n", "more_body": True}]
    stalled = asyncio.Event()

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await stalled.wait()  # the client sends nothing more; the idle timeout (0.5 s here) ends the stream
        return {"type": "http.disconnect"}

    sent: list[dict] = []
    await asyncio.wait_for(call(app, receive, sent), timeout=10)
    body = [orjson.loads(m["body"]) for m in sent if m["type"] == "http.response.body" and m["body"]]
    assert body[0]["id"] == "a" and body[1]["code"] == "request_timeout"
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_a_client_that_leaves_frees_its_queued_items_and_in_flight_is_bounded(app, digits, monkeypatch):
    entry = app.runtime.registry.get("digits-sklearn", "v2")
    release = threading.Event()
    original = entry.runner.run
    monkeypatch.setattr(app.runtime.parts.stream, "max_in_flight", 4)
    monkeypatch.setattr(entry.batcher, "inline_budget", 0.0)  # run on the thread, so the loop stays free

    def stuck(batch):  # injected fault: the model hangs until the test lets it go
        release.wait(10)
        return original(batch)

    monkeypatch.setattr(entry.runner, "run", stuck)
    lines_sent = b"".join(item(r, f"i{k}") + b"\n" for k, r in enumerate(digits[:50].tolist()))
    reads = 0
    leave = asyncio.Event()

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        if reads == 1:
            return {"type": "http.request", "body": lines_sent, "more_body": True}
        await leave.wait()
        return {"type": "http.disconnect"}

    sent: list[dict] = []
    task = asyncio.create_task(call(app, receive, sent))
    while entry.active < 4:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)
    assert entry.active == 4  # back-pressure: four of fifty items in flight, the rest not started
    release.set()  # the first batch completes; its items answer and four more start, then the client leaves
    leave.set()
    await asyncio.wait_for(task, timeout=10)
    while entry.active or entry.batcher.queued_rows or entry.batcher.running:
        await asyncio.sleep(0.005)
    answered = [m for m in sent if m["type"] == "http.response.body" and m["body"]]
    assert len(answered) < 50
