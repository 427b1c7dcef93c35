"""The Redis breaker on a clock the test steps: back-off, one probe per period, one log line per outage edge."""

from __future__ import annotations

import logging

import pytest

from core.redis_breaker import RedisBreaker
from tests.helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Warnings:
    """The breaker's log lines of the running test (caplog's records are replaced between test phases)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.WARNING, logger="core.redis_breaker")
        self.caplog = caplog

    def __call__(self) -> list[str]:
        return [r.getMessage() for r in self.caplog.records]


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> Warnings:
    return Warnings(caplog)


def test_up_it_always_lets_calls_through(clock: FakeClock, warnings: Warnings) -> None:
    breaker = RedisBreaker("cache", 1.0, "serving from memory", clock)
    assert all(breaker.attempt() for _ in range(5))
    assert not breaker.down and breaker.retry_in() == 0.0 and breaker.errors == 0
    breaker.succeeded(sent_while_down=False)
    assert warnings() == []


def test_a_failure_backs_off_then_one_probe_per_period(clock: FakeClock, warnings: Warnings) -> None:
    breaker = RedisBreaker("cache", 1.0, "serving from memory", clock)
    breaker.failed(ConnectionError("refused"), 20)
    assert breaker.down and breaker.errors == 1
    assert not breaker.attempt() and breaker.retry_in() == pytest.approx(1.0)
    clock.advance(0.6)
    assert not breaker.attempt() and breaker.retry_in() == pytest.approx(0.4)
    clock.advance(0.4)  # the back-off is over: exactly one caller probes, the others keep bypassing
    assert breaker.attempt()
    assert not breaker.attempt() and not breaker.attempt()
    assert breaker.retry_in() == pytest.approx(1.0)
    breaker.failed(ConnectionError("refused"), 20)  # the probe failed: back off again, no new log line
    assert breaker.errors == 2 and not breaker.attempt()
    assert warnings() == [
        "cache: Redis unavailable (ConnectionError: refused); serving from memory until it answers"
    ]


def test_a_timeout_without_a_message_says_how_long_it_waited(clock: FakeClock, warnings: Warnings) -> None:
    breaker = RedisBreaker("rate limiter", 0.5, "allowing requests unchecked", clock)
    breaker.failed(TimeoutError(), 50)
    assert "no answer within 50 ms" in warnings()[0]


def test_only_a_reply_to_a_call_sent_during_the_outage_ends_it(clock: FakeClock, warnings: Warnings) -> None:
    breaker = RedisBreaker("cache", 1.0, "serving from memory", clock)
    breaker.failed(ConnectionError("refused"), 20)
    breaker.succeeded(sent_while_down=False)  # a late reply to a call sent before the outage proves nothing
    assert breaker.down
    clock.advance(2.5)
    assert breaker.attempt()
    breaker.succeeded(sent_while_down=True)
    assert not breaker.down and breaker.attempt()
    assert warnings()[1:] == ["cache: Redis answers again; recovered after 2.5 s"]


def test_each_outage_is_logged_once_at_each_edge(clock: FakeClock, warnings: Warnings) -> None:
    breaker = RedisBreaker("watcher", 0.1, "keeping the last known routes", clock)
    for _ in range(3):
        for _ in range(4):
            breaker.failed(OSError("gone"), 10)
            clock.advance(0.1)
            breaker.attempt()
        breaker.succeeded(sent_while_down=True)
    messages = warnings()
    assert len(messages) == 6 and breaker.errors == 12
    assert [("unavailable" in m, "answers again" in m) for m in messages] == [(True, False), (False, True)] * 3
