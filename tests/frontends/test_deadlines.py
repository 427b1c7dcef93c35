"""Request time limits swept by one timer: the limit that expires is the one that answers."""

from __future__ import annotations

import asyncio

import pytest

from frontends.deadlines import RESOLUTION_S, Deadlines


class Expired(Exception):
    pass


async def limited(deadlines: Deadlines, seconds: float, work) -> str:
    limit = deadlines.start(seconds)
    try:
        return await work()
    except asyncio.CancelledError:
        if deadlines.expired(limit):
            raise Expired(seconds) from None
        raise
    finally:
        deadlines.stop(limit)


async def test_an_expired_limit_cancels_its_task_within_the_resolution():
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Expired):
        await limited(deadlines, 0.1, lambda: asyncio.sleep(10))
    assert 0.1 <= loop.time() - started < 0.1 + 3 * RESOLUTION_S
    assert asyncio.current_task().cancelling() == 0  # the cancellation was taken back


async def test_work_that_finishes_in_time_is_left_alone_and_the_sweep_stops():
    deadlines = Deadlines()
    assert await limited(deadlines, 0.05, lambda: asyncio.sleep(0, "done")) == "done"
    await asyncio.sleep(3 * RESOLUTION_S)  # past the limit: nothing is cancelled any more
    assert deadlines._timer is None and not deadlines._open


async def test_the_inner_limit_answers_when_it_is_the_shorter():
    deadlines = Deadlines()

    async def inner() -> str:
        return await limited(deadlines, 0.05, lambda: asyncio.sleep(10))

    with pytest.raises(Expired) as raised:
        await limited(deadlines, 5.0, inner)
    assert raised.value.args == (0.05,)


async def test_a_cancellation_from_elsewhere_stays_a_cancellation():
    deadlines = Deadlines()
    task = asyncio.create_task(limited(deadlines, 5.0, lambda: asyncio.sleep(10)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
