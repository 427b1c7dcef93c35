"""SIGTERM in a worker: not ready at once, the server's own handler (uvicorn's: stop accepting, drain)
only after the pre-stop delay, and once however many SIGTERMs arrive meanwhile."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from app.drain import install


def test_sigterm_marks_not_ready_at_once_and_hands_over_after_the_delay():
    handed_over: list[float] = []
    drained: list[float] = []

    async def scenario() -> float:
        install(lambda: drained.append(time.monotonic()), delay_s=0.3)
        sent = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.05)
        assert drained and not handed_over, "not ready at once, still serving"
        os.kill(os.getpid(), signal.SIGTERM)  # e.g. to the whole process group as well
        while not handed_over:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        return sent

    previous = signal.signal(signal.SIGTERM, lambda sig, frame: handed_over.append(time.monotonic()))
    try:
        sent = asyncio.run(scenario())
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert len(drained) == 1 and len(handed_over) == 1
    assert handed_over[0] - sent >= 0.3
