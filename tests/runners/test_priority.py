"""Request priorities in the batcher, deterministic: the model runs one batch per step the test allows,
then we assert which requests are done, what is still pending and the order batches took."""

from __future__ import annotations

import asyncio
import threading
import uuid

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from core.errors import BudgetExceeded
from demo import data
from observability.metrics import BatchMetrics, Metrics
from runners.batcher import AdaptiveBatcher
from runners.settings import BatchSettings
from tests.runners.test_batcher import until

PIXELS = data.digits().x_test


class Stepped:
    """A real runner that runs one batch per `step()` and records which request rows each batch held."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.batches: list[list[int]] = []
        self._steps = threading.Semaphore(0)
        self._index = {PIXELS[i].tobytes(): i for i in range(len(PIXELS))}

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def collate(self, arrays):
        return self.runner.collate(arrays)

    def run(self, batch):
        self.batches.append([self._index[row.tobytes()] for row in batch])
        assert self._steps.acquire(timeout=30), "the test never let this batch run"
        return self.runner.run(batch)

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self._steps.release()


def row(i: int) -> np.ndarray:
    return PIXELS[i : i + 1]


def make(runner, cost: tuple[tuple[int, float], ...] = ((1, 1e-4), (2, 2e-4)), **settings) -> AdaptiveBatcher:
    """Batches on the batcher's thread; the cost model is seeded, so the time a step holds the model
    counts as an outlier and does not make every queued request look due."""
    batcher = AdaptiveBatcher(runner, BatchSettings(**{"max_latency_ms": 30_000, "inline_max_ms": 0, **settings}))
    batcher.learn(list(cost))
    return batcher


async def busy(model: Stepped, batcher: AdaptiveBatcher) -> asyncio.Task:
    """A first request (row 0) that holds the model until the test steps it, so later requests queue."""
    task = asyncio.create_task(batcher.submit(row(0)))
    await until(lambda: len(model.batches) == 1)
    return task


def submit(batcher: AdaptiveBatcher, i: int, priority: int) -> asyncio.Task:
    return asyncio.create_task(batcher.submit(row(i), priority=priority))


@pytest.fixture
def sk(runners):
    return runners["digits-sklearn"]


async def test_high_priority_requests_keep_their_latency_while_low_ones_wait(sk):
    model = Stepped(sk)
    batcher = make(model, max_batch_size=2)
    first = await busy(model, batcher)
    low = [submit(batcher, i, 3) for i in (1, 2, 3, 4)]
    default = [submit(batcher, i, 0) for i in (5, 6)]
    high = [submit(batcher, i, 1) for i in (7, 8)]
    await until(lambda: batcher.queued_rows == 8)
    assert (batcher.level_rows(1), batcher.level_rows(0), batcher.level_rows(3)) == (2, 2, 4)

    model.step(2)  # the busy batch, then one more
    await asyncio.gather(first, *high)
    assert model.batches[1] == [7, 8]  # the last to arrive, the first to run
    await until(lambda: len(model.batches) == 3)
    assert not any(t.done() for t in low + default)
    assert batcher.queued_rows == 4 and batcher.level_rows(3) == 4

    model.step(3)
    results = await asyncio.gather(*default, *low)
    assert model.batches[2:] == [[5, 6], [1, 2], [3, 4]]
    expected = sk.run(PIXELS[[5, 6, 1, 2, 3, 4]])["label"]
    assert [int(r["label"][0]) for r in results] == list(expected)


async def test_equal_priorities_keep_arrival_order_and_unknown_levels_are_the_default(sk):
    model = Stepped(sk)
    batcher = make(model, max_batch_size=3, priority_levels=2, default_priority=2)
    first = await busy(model, batcher)
    # 0 and a level past the last (Triton's rule) both mean the default level, 2.
    tasks = [submit(batcher, 1, 2), submit(batcher, 2, 0), submit(batcher, 3, 7), submit(batcher, 4, 1), submit(batcher, 5, 2)]
    await until(lambda: batcher.queued_rows == 5)
    assert batcher.level_rows(2) == batcher.level_rows(0) == 4 and batcher.level_rows(1) == 1
    model.step(3)
    await asyncio.gather(first, *tasks)
    assert model.batches[1:] == [[4, 1, 2], [3, 5]]


async def test_a_low_priority_request_leaves_once_waiting_would_break_its_budget(sk):
    model = Stepped(sk)
    batcher = make(model, max_batch_size=2, max_latency_ms=200)
    first = await busy(model, batcher)
    loop = asyncio.get_running_loop()
    early = submit(batcher, 1, 3)
    await until(lambda: batcher.queued_rows == 1)
    enqueued = loop.time()
    await until(lambda: loop.time() > enqueued + 0.2)  # its budget is spent while the model is held
    high = [submit(batcher, i, 1) for i in (2, 3, 4)]
    late = submit(batcher, 5, 3)  # same level, still within its budget: it waits for the high ones
    await until(lambda: batcher.queued_rows == 5)

    model.step(4)
    await asyncio.gather(first, early, late, *high)
    assert model.batches[1:] == [[1, 2], [3, 4], [5]]


async def test_a_stream_of_high_priority_requests_does_not_starve_a_low_one(sk):
    model = Stepped(sk)
    batcher = make(model, max_batch_size=2, max_latency_ms=100)
    first = await busy(model, batcher)
    loop = asyncio.get_running_loop()
    low = submit(batcher, 1, 3)
    await until(lambda: batcher.queued_rows == 1)
    enqueued = loop.time()
    stream: list[asyncio.Task] = []
    next_row = 2
    while not low.done():
        assert loop.time() < enqueued + 10, "the low-priority request never left"
        while batcher.level_rows(1) < 4:  # the high-priority queue never runs dry
            stream.append(submit(batcher, next_row, 1))
            next_row += 1
            await asyncio.sleep(0)
        ran = len(model.batches)
        model.step()
        await until(lambda ran=ran: len(model.batches) > ran or low.done())
    await low
    position = next(i for i, b in enumerate(model.batches) if 1 in b)
    assert position > 1 and all(1 not in b and len(b) == 2 for b in model.batches[1:position])  # high ones went first
    model.step(len(stream))
    await asyncio.gather(first, *stream)


async def test_a_high_priority_request_is_admitted_past_a_low_backlog_that_refuses_more_low_ones(sk):
    model = Stepped(sk)
    batcher = make(model, cost=((1, 0.02), (1, 0.02)), max_batch_size=1, max_latency_ms=50)  # 20 ms a batch
    first = await busy(model, batcher)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await until(lambda: loop.time() > started + 0.03)  # past the busy batch's expected end: only the queue counts
    low = [submit(batcher, i, 3) for i in (1, 2)]  # 20 and 40 ms expected: within the 50 ms budget
    await until(lambda: batcher.queued_rows == 2)
    with pytest.raises(BudgetExceeded):
        await batcher.submit(row(3), priority=3)  # 60 ms behind two low batches
    high = submit(batcher, 4, 1)  # nothing of its level ahead: 20 ms
    await until(lambda: batcher.level_rows(1) == 1)
    model.step(4)
    results = await asyncio.gather(first, high, *low)
    assert sorted(i for b in model.batches[1:] for i in b) == [1, 2, 4] and all(len(r["label"]) == 1 for r in results)


async def test_requests_are_counted_per_priority_level(sk):
    metrics = Metrics(CollectorRegistry())
    name = f"priority-{uuid.uuid4().hex[:8]}"
    batcher = AdaptiveBatcher(sk, BatchSettings(), BatchMetrics(metrics, name, "v1", 4096))
    for priority in (1, 1, 0, 2, 3, 9):
        await batcher.submit(row(priority), priority=priority)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=metrics.directory)
    counts = {
        s.labels["priority"]: s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == "rtserve_requests_by_priority_total" and s.labels["model"] == name
    }
    assert counts == {"1": 2, "2": 3, "3": 1}  # 0 and 9 are the default level, 2
