"""Deterministic batching tests: the model is held by a gate, then we assert what is pending."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from core.errors import BudgetExceeded, DeadlineExceeded, ModelFailed, QueueFull
from demo import data
from runners.batcher import AdaptiveBatcher
from runners.cost import BatchCost
from runners.settings import BatchSettings


class Gated:
    """A real runner whose calls are recorded and can be held, slowed or made to fail."""

    def __init__(self, runner, fail: bool = False, delay: float = 0.0) -> None:
        self.runner = runner
        self.calls: list[int] = []
        self.threads: list[threading.Thread] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail = fail
        self.delay = delay

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def collate(self, arrays):
        return self.runner.collate(arrays)

    def run(self, batch):
        self.calls.append(len(batch))
        self.threads.append(threading.current_thread())
        self.entered.set()
        assert self.gate.wait(30)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("injected failure")
        return self.runner.run(batch)


def rows(n: int, start: int = 0) -> np.ndarray:
    return data.digits().x_test[start : start + n]


def make(runner, **settings) -> AdaptiveBatcher:
    """A batcher whose batches run on its thread (so a gate can hold them), unless settings say otherwise."""
    return AdaptiveBatcher(runner, BatchSettings(**{"max_latency_ms": 30_000, "inline_max_ms": 0, **settings}))


async def until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


async def hold_busy(model: Gated, batcher: AdaptiveBatcher, first: np.ndarray | None = None) -> asyncio.Task:
    """Close the model's gate and start one request, so the model is busy and later requests queue."""
    model.gate.clear()
    task = asyncio.create_task(batcher.submit(rows(1) if first is None else first))
    await until(model.entered.is_set)
    return task


@pytest.fixture
def sk(runners):
    return runners["digits-sklearn"]


async def test_concurrent_requests_share_one_model_call(sk):
    model = Gated(sk)
    batcher = make(model, max_batch_size=64)
    first = await hold_busy(model, batcher)
    others = [asyncio.create_task(batcher.submit(rows(1, i))) for i in range(1, 17)]
    await until(lambda: batcher.queued_rows == 16)
    assert model.calls == [1]
    model.gate.set()
    results = await asyncio.gather(first, *others)
    assert model.calls == [1, 16]
    expected = sk.run(rows(17))["probabilities"]
    for i, out in enumerate(results):
        np.testing.assert_allclose(out["probabilities"], expected[i : i + 1], rtol=1e-5)


async def test_lone_request_does_not_wait(sk):
    batcher = make(sk)
    start = time.perf_counter()
    out = await batcher.submit(rows(3))
    assert out["probabilities"].shape == (3, 10)
    assert time.perf_counter() - start < 1.0  # far below the 30 s budget: it left at once


async def test_each_request_gets_exactly_its_own_rows(sk):
    model = Gated(sk)
    batcher = make(model, max_batch_size=64)
    blocker = await hold_busy(model, batcher)
    sizes = [3, 1, 5, 2, 7]
    starts = np.cumsum([0, *sizes])[:-1]
    tasks = [asyncio.create_task(batcher.submit(rows(n, int(s)))) for n, s in zip(sizes, starts)]
    await until(lambda: batcher.queued_rows == sum(sizes))
    model.gate.set()
    await blocker
    outs = await asyncio.gather(*tasks)
    assert model.calls == [1, sum(sizes)]
    for n, s, out in zip(sizes, starts, outs):
        np.testing.assert_array_equal(out["label"], sk.run(rows(n, int(s)))["label"])


async def test_max_batch_size_splits_batches(sk):
    model = Gated(sk)
    batcher = make(model, max_batch_size=4)
    blocker = await hold_busy(model, batcher)
    tasks = [asyncio.create_task(batcher.submit(rows(1, i))) for i in range(10)]
    await until(lambda: batcher.queued_rows == 10)
    model.gate.set()
    await asyncio.gather(blocker, *tasks)
    assert model.calls == [1, 4, 4, 2]


async def test_a_request_larger_than_a_batch_runs_in_calls_of_at_most_max_batch_size(sk):
    model = Gated(sk)
    batcher = make(model, max_batch_size=64)
    big = rows(150)
    out = await batcher.submit(big)
    assert model.calls == [64, 64, 22]
    whole = sk.run(big)  # the same rows in one call
    assert out.keys() == whole.keys()
    for name in whole:
        np.testing.assert_allclose(out[name], whole[name], rtol=1e-6)


async def test_a_failed_batch_fails_every_caller(sk):
    model = Gated(sk, fail=True)
    batcher = make(model)
    tasks = [await hold_busy(model, batcher)]
    tasks += [asyncio.create_task(batcher.submit(rows(1, i))) for i in range(1, 6)]
    await until(lambda: batcher.queued_rows == 5)
    model.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, ModelFailed) and "injected failure" in str(r) for r in results)
    assert batcher.stats.failed_batches == 2
    model.fail = False
    assert (await batcher.submit(rows(2)))["label"].shape == (2,)  # the batcher still works


async def test_outputs_with_the_wrong_row_count_fail_the_batch(sk):
    class Short(Gated):
        def run(self, batch):
            out = super().run(batch)
            return {k: v[:-1] for k, v in out.items()}

    batcher = make(Short(sk))
    with pytest.raises(ModelFailed, match="one row per input row"):
        await batcher.submit(rows(3))


async def test_budget_that_cannot_be_met_is_refused_at_once(sk):
    batcher = make(Gated(sk, delay=0.2), max_latency_ms=50)
    batcher.learn([(1, 0.2), (64, 0.2)])  # the model has shown it needs 200 ms a batch
    one = rows(1)  # loading the data set is not the batcher's time
    start = time.perf_counter()
    with pytest.raises(BudgetExceeded):
        await batcher.submit(one)
    assert time.perf_counter() - start < 0.05
    assert batcher.stats.refused == 1


async def test_partial_batch_leaves_by_its_latency_budget(sk):
    """With a second worker free, a partial batch waits for company, but only while its budget allows."""
    model = Gated(sk)
    batcher = make(model, workers=2, max_batch_size=64, max_latency_ms=300)
    batcher.learn([(1, 0.001), (64, 0.002)])
    blocker = await hold_busy(model, batcher)
    one = rows(1, 1)  # loading the data set is not the batcher's time
    start = time.perf_counter()
    waiting = asyncio.create_task(batcher.submit(one))
    await asyncio.sleep(0.1)
    assert model.calls == [1]  # still waiting for more rows: budget not yet at risk
    await until(lambda: len(model.calls) == 2, timeout=5)
    left_after = time.perf_counter() - start
    assert 0.2 < left_after < 0.35  # left just before its 300 ms budget ran out
    model.gate.set()
    await asyncio.gather(blocker, waiting)


async def test_full_queue_is_refused(sk):
    model = Gated(sk)
    batcher = make(model, max_queue_rows=4)
    blocker = await hold_busy(model, batcher)
    queued = asyncio.create_task(batcher.submit(rows(4)))
    await until(lambda: batcher.queued_rows == 4)
    with pytest.raises(QueueFull) as info:
        await batcher.submit(rows(1))
    assert info.value.headers["Retry-After"]
    model.gate.set()
    await asyncio.gather(blocker, queued)


async def test_deadline_answers_504_and_drops_the_work(sk):
    model = Gated(sk)
    batcher = make(model)
    blocker = await hold_busy(model, batcher)
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    with pytest.raises(DeadlineExceeded):
        await batcher.submit(rows(5), deadline=loop.time() + 0.05)
    assert time.perf_counter() - start < 1.0
    model.gate.set()
    await blocker
    await batcher.drain()
    assert model.calls == [1]  # the expired rows never reached the model


async def test_cancelled_request_is_not_run(sk):
    model = Gated(sk)
    batcher = make(model)
    blocker = await hold_busy(model, batcher)
    gone = asyncio.create_task(batcher.submit(rows(3)))
    kept = asyncio.create_task(batcher.submit(rows(2)))
    await until(lambda: batcher.queued_rows == 5)
    gone.cancel()
    model.gate.set()
    await asyncio.gather(blocker, kept)
    assert model.calls == [1, 2]


async def test_variable_length_requests_are_padded_into_one_batch(runners):
    seq = runners["seq-torch"]
    model = Gated(seq)
    batcher = make(model)
    x, _ = data.sequences(8, seed=7)
    reqs = [r[: max(1, int((r > 0).sum()))][None, :] for r in x]
    blocker = await hold_busy(model, batcher, reqs[0])
    tasks = [asyncio.create_task(batcher.submit(r)) for r in reqs[1:]]
    await until(lambda: batcher.queued_rows == 7)
    model.gate.set()
    outs = await asyncio.gather(blocker, *tasks)
    assert model.calls == [1, 7]
    for r, out in zip(reqs, outs):
        np.testing.assert_allclose(out["probabilities"], seq.run(r)["probabilities"], rtol=1e-5, atol=1e-6)


async def test_fast_batches_run_on_the_loop_and_share_one_call(sk):
    model = Gated(sk)
    batcher = make(model, inline_max_ms=5)
    batcher.learn([(1, 0.0001), (64, 0.0002)])
    results = await asyncio.gather(*(batcher.submit(rows(1, i)) for i in range(12)))
    assert model.calls == [12]  # submitted in one loop turn, so one batch
    assert model.threads == [threading.current_thread()]
    expected = sk.run(rows(12))["label"]
    assert [int(r["label"][0]) for r in results] == list(expected)


async def test_a_failed_inline_batch_fails_its_callers_and_the_loop_goes_on(sk):
    model = Gated(sk, fail=True)
    batcher = make(model, inline_max_ms=5)
    results = await asyncio.gather(*(batcher.submit(rows(1, i)) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ModelFailed) and "injected failure" in str(r) for r in results)
    model.fail = False
    assert (await batcher.submit(rows(2)))["probabilities"].shape == (2, 10)
    assert batcher.stats.failed_batches == 1


async def test_batches_expected_to_be_slow_run_on_a_thread(sk):
    model = Gated(sk)
    batcher = make(model, inline_max_ms=5)
    batcher.learn([(1, 0.001), (64, 0.05)])  # 64 rows: over the inline budget, 1 row: under
    await asyncio.gather(*(batcher.submit(rows(1, i)) for i in range(64)))
    await batcher.submit(rows(1))
    assert model.calls == [64, 1]
    assert model.threads[0] is not threading.current_thread()
    assert model.threads[1] is threading.current_thread()


async def test_the_cost_of_sequences_grows_with_their_tokens_not_only_their_rows(runners):
    """Four rows of 256 tokens cost what 1,024 tokens cost: over a 100 ms budget the model has shown it cannot
    meet, they are refused at once, while four rows of 8 tokens are admitted and answered."""
    batcher = make(runners["seq-torch"], max_latency_ms=100)
    batcher.learn([(8, 0.001), (256, 0.032)])  # 0.125 ms a token
    short, long = np.ones((4, 8), dtype=np.int64), np.ones((4, 256), dtype=np.int64)
    assert batcher.expected_cost(short) == pytest.approx(0.004)
    assert batcher.expected_cost(long) == pytest.approx(0.128)
    with pytest.raises(BudgetExceeded):
        await batcher.submit(long)
    assert len((await batcher.submit(short))["probabilities"]) == 4


def test_cost_model_learns_fixed_and_per_row_cost():
    cost = BatchCost()
    for n in [1, 8, 32, 64] * 10:
        cost.observe(n, 0.002 + 0.0001 * n)
    assert cost.fixed == pytest.approx(0.002, rel=1e-3)
    assert cost.per_row == pytest.approx(0.0001, rel=1e-3)
    assert cost.estimate(16) == pytest.approx(0.0036, rel=1e-3)


def test_one_stalled_batch_does_not_make_unseen_sizes_look_expensive():
    cost = BatchCost()
    for _ in range(200):
        cost.observe(1, 10e-6)
    cost.observe(2, 0.030)  # descheduled for 30 ms
    for _ in range(50):
        cost.observe(1, 10e-6)
    assert cost.estimate(1) < 0.0002
    assert cost.estimate(64) < 0.002  # a 64-row batch is never expected to cost more than 64 single rows


def test_cost_model_follows_a_real_slowdown():
    cost = BatchCost()
    for _ in range(50):
        cost.observe(4, 0.001)
    for _ in range(100):
        cost.observe(4, 0.020)
    assert cost.estimate(4) == pytest.approx(0.020, rel=0.1)
