"""Models that misbehave under a steady load on another model: one raises for some inputs, one is
slow. Their faults reach only their own requests, as clear JSON errors, within bounded time."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np

from tests.faults.conftest import SLOW_BATCHING, SLOW_DELAY_S
from tests.faults.faultmodels import POISON
from tests.faults.load import SteadyLoad, infer_body


async def burst(url: str, headers: dict[str, str], model: str, rows: np.ndarray, extra: dict[str, str] | None = None):
    """All rows at once, one connection each: (status, JSON body, Retry-After, seconds) per row."""

    async def one(client: httpx.AsyncClient, row: np.ndarray):
        start = time.monotonic()
        r = await client.post(f"/v2/models/{model}/infer", json=infer_body(row), headers=extra or {})
        return r.status_code, r.json(), r.headers.get("retry-after"), time.monotonic() - start

    limits = httpx.Limits(max_keepalive_connections=0, max_connections=len(rows))
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits) as client:
        return await asyncio.gather(*(one(client, row) for row in rows))


def label_of(doc: dict) -> int:
    return next(o["data"][0] for o in doc["outputs"] if o["name"] == "label")


def test_a_model_that_raises_fails_only_its_batch(fault_gateway, digits):
    rows, expected = digits
    url, headers = fault_gateway.url, fault_gateway.headers(ttl=3600)
    poisoned = rows[0].copy()
    poisoned[0] = POISON
    with SteadyLoad(url, headers, rows, expected, rate=40, clients=2, fresh_connections=True) as load:
        load.wait_for_answers(20)
        alone = httpx.post(f"{url}/v2/models/faults-picky/infer", json=infer_body(poisoned), headers=headers, timeout=10)
        assert alone.status_code == 500, alone.text
        assert alone.json()["code"] == "model_error" and "first pixel is 16" in alone.json()["error"]
        assert "Traceback" not in alone.text
        # Eight good rows and one poisoned row at once, ten times: good rows that share the poisoned
        # row's batch fail with it (a failed batch fails all its requests); every other one succeeds.
        good_ok = good_failed = 0
        for round_ in range(10):
            batch = np.vstack([rows[1 + 8 * round_ : 9 + 8 * round_], poisoned[None, :]])
            answers = asyncio.run(burst(url, headers, "faults-picky", batch))
            *good, bad = answers
            assert bad[0] == 500 and bad[1]["code"] == "model_error", bad
            for k, (status, doc, _, _) in enumerate(good):
                if status == 200:
                    assert label_of(doc) == expected["v1"][1 + 8 * round_ + k]
                    good_ok += 1
                else:
                    assert status == 500 and doc["code"] == "model_error", doc
                    good_failed += 1
        after = httpx.post(f"{url}/v2/models/faults-picky/infer", json=infer_body(rows[1]), headers=headers, timeout=10)
        assert after.status_code == 200 and label_of(after.json()) == expected["v1"][1]
    s = load.summary()
    print(
        f"\nraising model: good requests sent with a poisoned one: {good_ok} ok, {good_failed} failed with it "
        f"(shared its batch); steady load on digits-sklearn: {s}"
    )
    print(s.row("a model raises for some inputs (other model's traffic)"))
    assert (s.failed, s.lost, s.wrong) == (0, 0, 0), s.by_status


def test_a_slow_model_gets_deadlines_and_a_bounded_queue(fault_gateway, digits):
    rows, expected = digits
    url, headers = fault_gateway.url, fault_gateway.headers(ttl=3600)
    fresh = {**headers, "Cache-Control": "no-cache"}  # every request runs the model
    with SteadyLoad(url, headers, rows, expected, rate=40, clients=2, fresh_connections=True) as load:
        load.wait_for_answers(20)
        # A deadline shorter than one model call: 504 at the deadline, not when the call ends.
        with httpx.Client(base_url=url, headers=fresh, timeout=10) as client:  # made before the clock starts
            start = time.monotonic()
            late = client.post("/v2/models/faults-slow/infer", json=infer_body(rows[0]), headers={"X-Request-Timeout-Ms": "30"})
            late_s = time.monotonic() - start
        assert late.status_code == 504 and late.json()["code"] == "deadline_exceeded", late.text
        # 24 at once on two workers, each running 2 rows and queueing 4: the rest is refused at once.
        answers = asyncio.run(burst(url, fresh, "faults-slow", rows[:24]))
        served = [a for a in answers if a[0] == 200]
        refused = [a for a in answers if a[0] != 200]
        assert all(a[0] == 503 and a[1]["code"] == "queue_full" and a[2] for a in refused), refused
        assert served and refused, [a[0] for a in answers]
        assert all(label_of(a[1]) == expected["v1"][k] for k, a in enumerate(answers) if a[0] == 200)
        # Deadlines inside the queue: a burst with a deadline of two model calls.
        timed = asyncio.run(
            burst(url, fresh, "faults-slow", rows[24:36], {"X-Request-Timeout-Ms": str(int(2000 * SLOW_DELAY_S))})
        )
        assert {a[0] for a in timed} <= {200, 503, 504}, timed
        assert any(a[0] == 504 for a in timed), [a[0] for a in timed]
    slowest_served = max(a[3] for a in served)
    slowest_refusal = max(a[3] for a in refused)
    slowest_timed = max(a[3] for a in timed)
    s = load.summary()
    print(
        f"\nslow model ({SLOW_DELAY_S * 1000:.0f} ms a call, {SLOW_BATCHING}): 30 ms deadline answered 504 in "
        f"{late_s * 1000:.0f} ms; burst of 24: {len(served)} served (slowest {slowest_served:.2f} s), {len(refused)} refused "
        f"503 queue_full (slowest {slowest_refusal:.2f} s); burst of 12 with {2 * SLOW_DELAY_S * 1000:.0f} ms deadlines: "
        f"{sorted(a[0] for a in timed)}, slowest {slowest_timed:.2f} s; steady load on digits-sklearn: {s}"
    )
    print(s.row("a slow model: deadlines and queue bound (other model's traffic)"))
    # Bounded latency: the queue holds 3 calls' worth per worker; allow as much again for a busy machine.
    assert slowest_served < 6 * SLOW_DELAY_S + 1.0
    assert late_s < SLOW_DELAY_S
    assert (s.failed, s.lost, s.wrong) == (0, 0, 0), s.by_status
