"""What every Redis user here does when Redis is down: back off, probe, and say so once.

Redis is an optimisation or shared state, never something a request may hang on. After a
failed call the component stops calling Redis for `backoff_s`; then one call probes while
the others keep bypassing. Each outage is logged once when it starts and once when it ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class RedisBreaker:
    def __init__(
        self, component: str, backoff_s: float, while_down: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.component = component
        self.backoff_s = backoff_s
        self.while_down = while_down  # what the component does meanwhile, for the log line
        self.clock = clock  # seconds; a test steps it instead of sleeping through back-offs
        self.down = False
        self.errors = 0
        self._since = 0.0
        self._retry_at = 0.0

    def attempt(self) -> bool:
        """Whether to call Redis now: always while up; while down, one call per back-off period."""
        if not self.down:
            return True
        now = self.clock()
        if now < self._retry_at:
            return False
        self._retry_at = now + self.backoff_s
        return True

    def retry_in(self) -> float:
        return max(0.0, self._retry_at - self.clock())

    def failed(self, exc: BaseException, timeout_ms: float) -> None:
        self.errors += 1
        now = self.clock()
        self._retry_at = now + self.backoff_s
        if not self.down:
            self.down, self._since = True, now
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else f"no answer within {timeout_ms:g} ms"
            log.warning("%s: Redis unavailable (%s); %s until it answers", self.component, reason, self.while_down)

    def succeeded(self, sent_while_down: bool) -> None:
        """A reply ends the outage only if its call was sent during it (a late reply proves nothing)."""
        if self.down and sent_while_down:
            self.down = False
            log.warning("%s: Redis answers again; recovered after %.1f s", self.component, self.clock() - self._since)
