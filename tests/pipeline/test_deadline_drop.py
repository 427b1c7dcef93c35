"""A request that leaves (its deadline, a disconnect) takes its rows out of the batcher's queue, through
the cache as production runs it: a computation shared by identical requests is dropped only once every
caller waiting on it has left, and one still waiting gets its answer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from gateway.cache.settings import CacheSettings
from tests.inprocess import InProcess, serve_in_process

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.cache_independent]
"""Its server sets the cache on itself: it tests the cache."""

INFER = "/v2/models/digits-sklearn/versions/v1/infer"


class Gate:
    """Around the version's runner: records each model call's rows and can hold calls until opened."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.calls: list[list[float]] = []
        self.open = threading.Event()
        self.entered = threading.Event()

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def run(self, batch):
        self.calls.append([float(v) for v in batch[:, 0]])
        self.entered.set()
        assert self.open.wait(30)
        return self.runner.run(batch)


def body(first: float) -> dict:
    return {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [first] + [1.0] * 63}]}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(model_store, tmp_path_factory) -> AsyncIterator[InProcess]:
    async with serve_in_process(tmp_path_factory.mktemp("deadline"), cache=CacheSettings(enabled=True)) as s:
        yield s


@pytest.fixture
def gate(served, monkeypatch) -> Gate:
    batcher = served.runtime.registry.versions("digits-sklearn")["v1"].batcher
    gate = Gate(batcher.runner)
    monkeypatch.setattr(batcher, "runner", gate)
    monkeypatch.setattr(batcher, "inline_budget", 0.0)  # every batch on the thread, where the gate holds it
    return gate


async def until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_rows_of_requests_past_their_deadline_are_never_computed(served, gate):
    client, headers = served.client, served.headers()
    busy = asyncio.create_task(client.post(INFER, json=body(0.0), headers=headers))  # holds the model
    await until(gate.entered.is_set)
    late = {**headers, "X-Request-Timeout-Ms": "50"}
    gone = [asyncio.create_task(client.post(INFER, json=body(2.0), headers=late)) for _ in range(2)]  # coalesced
    kept = [asyncio.create_task(client.post(INFER, json=body(3.0), headers=h)) for h in (late, headers)]
    assert [(await r).status_code for r in gone] == [504, 504]
    assert (await kept[0]).status_code == 504
    gate.open.set()
    assert (await busy).status_code == 200
    survivor = await kept[1]  # its twin left; it still waited, and gets the answer
    assert survivor.status_code == 200 and len(survivor.json()["outputs"][0]["data"]) > 0
    await served.runtime.registry.versions("digits-sklearn")["v1"].batcher.drain()
    computed = sorted(row for call in gate.calls for row in call)
    assert computed == [0.0, 3.0], f"rows computed: {gate.calls}; the 2.0 rows had no caller left"
