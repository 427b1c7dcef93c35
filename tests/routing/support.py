"""What the routing tests share: document builders and polling for a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from routing.document import Canary, CanaryDecision, ModelRoutes


def routes(weights: dict[str, float] | None = None, loaded: list[str] | None = None, **extra) -> ModelRoutes:
    return ModelRoutes(loaded=loaded or ["v1", "v2"], weights=weights or {"v1": 100.0}, **extra)


def canary(**overrides) -> Canary:
    fields = {
        "version": "v2",
        "stable": "v1",
        "steps": [5, 25, 100],
        "step": 0,
        "step_started_at": 1.0,
        "status": "running",
        "decisions": [CanaryDecision(at=1.0, action="start", step=0, weight=5, reason="started", numbers={})],
        "started_at": 1.0,
        "hold_s": 30.0,
        "min_requests": 100,
    }
    return Canary(**{**fields, **overrides})


async def eventually(check: Callable[[], bool], timeout: float = 1.0, what: str = "condition") -> float:
    """Seconds until `check()` held; fails after `timeout`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start
