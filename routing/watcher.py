"""Keeps one worker's copy of the route documents in step with the store.

A store bumps one global revision on every write, so the watcher only compares a number to
know whether anything changed: pushed by the store's change stream where it has one (Redis
pub/sub), and polled so a lost message costs at most one interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Self

from redis.exceptions import RedisError

from core.redis_breaker import RedisBreaker
from observability.health import BackgroundHealth
from routing.document import ModelRoutes
from routing.stores import StateStore

log = logging.getLogger(__name__)

WATCHER_TASK = "route_watcher"


OnChange = Callable[[dict[str, ModelRoutes]], Awaitable[None] | None]


class StateWatcher:
    """Keeps one worker's view of the routing state within `interval_s` of the store's.

    Pub/sub (where the store has it) makes changes arrive in milliseconds; polling the
    revision every `interval_s` catches what pub/sub lost. A failing store never ends the
    task: the last known state stays in force, the outage is logged once, and polling goes
    on. If the store comes back without documents this worker knew (Redis restarted empty,
    state file deleted), the worker writes its last known ones back; the first to do so wins.
    """

    def __init__(
        self,
        store: StateStore,
        on_change: OnChange,
        interval_s: float = 0.5,
        timeout_s: float = 2.0,
        health: BackgroundHealth | None = None,
    ) -> None:
        self.store = store
        self.health = health or BackgroundHealth()
        self.on_change = on_change
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.routes: dict[str, ModelRoutes] = {}
        self.revision: int | None = None
        self._breaker = RedisBreaker("routing state watcher", interval_s, "keeping the last known routes")
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> Self:
        """Read the state once (so the worker starts with it when the store answers), then keep watching."""
        await self.refresh()
        self._tasks.append(asyncio.create_task(self._poll(), name="routing-state-poll"))
        stream = self.store.changes()
        if stream is not None:
            self._tasks.append(asyncio.create_task(self._listen(stream), name="routing-state-listen"))
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    async def refresh(self) -> bool:
        """Apply the store's state if its revision moved; True when on_change was called."""
        async with self._lock:
            if self.store.remote and not self._breaker.attempt():
                return False
            sent_while_down, rev = self._breaker.down, None
            try:
                async with asyncio.timeout(self.timeout_s):
                    rev = await self.store.revision()
                    if rev == self.revision:
                        self._recovered(sent_while_down)
                        return False
                    rev, docs = await self.store.snapshot()
                    lost = {m: r for m, r in self.routes.items() if m not in docs}
                    if lost and await self.store.initialize(lost):
                        log.warning(
                            "routing state: %s had lost %s; restored this worker's last known copy",
                            self.store.source,
                            sorted(lost),
                        )
                        rev, docs = await self.store.snapshot()
            except (RedisError, OSError, TimeoutError) as exc:
                self._failed(exc)
                return False
            except ValueError as exc:  # a document that does not validate: keep the last good state
                self._breaker.succeeded(sent_while_down)
                self.health.failed(WATCHER_TASK, f"{self.store.source} holds an invalid document at revision {rev}: {exc}")
                return False
            self._breaker.succeeded(sent_while_down)
            self.routes = docs
            try:
                result = self.on_change(dict(docs))
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - a consumer's bug must not stop the watching; retried next poll
                log.debug("routing state: applying revision %s failed", rev, exc_info=True)
                self.health.failed(WATCHER_TASK, f"applying revision {rev} failed: {type(exc).__name__}: {exc}")
                return True
            self.revision = rev
            self.health.ok(WATCHER_TASK)
            return True

    def _failed(self, exc: BaseException) -> None:
        if self.store.remote:
            self._breaker.failed(exc, self.timeout_s * 1000)
        self.health.failed(WATCHER_TASK, f"{self.store.source} unreadable ({type(exc).__name__}: {exc}); keeping the last known routes")

    def _recovered(self, sent_while_down: bool) -> None:
        self._breaker.succeeded(sent_while_down)
        self.health.ok(WATCHER_TASK)

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - whatever the store holds, watching goes on
                self.health.failed(WATCHER_TASK, f"{type(exc).__name__}: {exc}")

    async def _listen(self, stream: AsyncIterator[None]) -> None:
        """Wakes the poller on every announcement; resubscribes after errors (the poller logs outages)."""
        while True:
            try:
                async for _ in stream:
                    self._wake.set()
            except Exception as exc:  # noqa: BLE001 - the poller still runs; try again after a pause
                log.debug("routing state: change channel failed (%s); resubscribing", exc)
            finally:
                await stream.aclose()
            await asyncio.sleep(self.interval_s)
            stream = self.store.changes()
