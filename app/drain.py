"""Draining on SIGTERM: the worker stops being ready first, serves on for a pre-stop delay, then drains and exits.

uvicorn closes its listener as soon as SIGTERM arrives and runs the service's shutdown hooks only
after the in-flight requests are done, so a shutdown hook cannot say "not ready" while a load
balancer could still act on it. The worker's SIGTERM handler is wrapped instead: readiness
(`/v2/health/ready`, BentoML's `/readyz`) answers 503 at once, and uvicorn's own handler (stop
accepting, finish in-flight requests, run the shutdown hooks) runs `delay_s` later.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from types import FrameType

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)


class DrainSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTSERVE_DRAIN_")

    delay_s: float = Field(0.0, ge=0.0)
    """Seconds between SIGTERM and closing the listener, while readiness already answers 503: as long as a
    load balancer needs to see not-ready. 0 closes at once (Kubernetes' preStop sleep plays this part there)."""


def install(on_drain: Callable[[], None], delay_s: float) -> None:
    """Wrap this process's SIGTERM handler (uvicorn's, when called from a start-up hook of the worker).

    Must run on the event loop's thread, which is the main thread in a BentoML worker."""
    server_handler = signal.getsignal(signal.SIGTERM)
    if not callable(server_handler):  # no server handler to hand over to (not inside a server)
        return
    loop = asyncio.get_running_loop()
    state = {"draining": False, "handed_over": False}

    def hand_over(sig: int, frame: FrameType | None) -> None:
        state["handed_over"] = True
        log.info("draining: closing the listener and finishing in-flight requests")
        server_handler(sig, frame)

    def on_sigterm(sig: int, frame: FrameType | None) -> None:
        if state["handed_over"]:
            server_handler(sig, frame)
            return
        if state["draining"]:  # a second SIGTERM within the delay (e.g. to the process group): one hand-over
            return
        state["draining"] = True
        on_drain()
        if delay_s <= 0:
            hand_over(sig, frame)
            return
        log.info("draining: not ready; still serving for %.1f s", delay_s)
        loop.call_soon_threadsafe(loop.call_later, delay_s, hand_over, sig, None)

    signal.signal(signal.SIGTERM, on_sigterm)
