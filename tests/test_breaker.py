"""Breaker boundaries with an injected clock: no sleeping, exact thresholds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conftest import FakeClock, MakeGateway
from gateway.breaker import CircuitBreaker, Permit, State
from gateway.config import BreakerSettings
from providers.base import Health


def make(clock: FakeClock, jitter: float = 0.0, transitions: list[tuple[str, str]] | None = None,
         **overrides: float) -> CircuitBreaker:
    values: dict[str, Any] = {"consecutive_failures": 5, "failure_rate": 0.5,
                              "minimum_calls": 10, "window": 30.0, "open_for": 30.0,
                              "max_open_for": 300.0, "half_open_probes": 1, **overrides}
    settings = BreakerSettings(**values)
    log = transitions if transitions is not None else []
    return CircuitBreaker("p", settings, clock=clock, rand=lambda: jitter,
                          on_transition=lambda n, old, new, why: log.append((old.value, new.value)))


def state(breaker: CircuitBreaker) -> State:
    """The state now (a function: a type checker must not assume a property stays put)."""
    return breaker.state


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        permit = breaker.acquire()
        assert permit is not None
        breaker.record(permit, Health.FAILURE)


def succeed(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        permit = breaker.acquire()
        assert permit is not None
        breaker.record(permit, Health.SUCCESS)


def test_trips_exactly_at_consecutive_threshold() -> None:
    breaker = make(FakeClock())
    fail(breaker, 4)
    assert state(breaker) is State.CLOSED
    fail(breaker, 1)
    assert state(breaker) is State.OPEN
    assert breaker.acquire() is None


def test_success_resets_the_consecutive_count() -> None:
    breaker = make(FakeClock(), minimum_calls=1000)
    fail(breaker, 4)
    succeed(breaker)
    fail(breaker, 4)
    assert state(breaker) is State.CLOSED


def test_trips_on_failure_rate_only_after_minimum_calls() -> None:
    clock = FakeClock()
    breaker = make(clock, consecutive_failures=100, minimum_calls=10, failure_rate=0.5)
    for _ in range(4):  # 4 failures, 4 successes: 8 calls < minimum
        fail(breaker)
        succeed(breaker)
    assert state(breaker) is State.CLOSED
    succeed(breaker)  # 9 calls, 4 failed
    assert state(breaker) is State.CLOSED
    fail(breaker)  # 10 calls, 5 failed = 0.5
    assert state(breaker) is State.OPEN


def test_failure_rate_window_forgets_old_calls() -> None:
    clock = FakeClock()
    breaker = make(clock, consecutive_failures=100, minimum_calls=10, window=30.0)
    for _ in range(5):
        fail(breaker)
        succeed(breaker)
    clock.advance(31)  # all of that is outside the window now
    for _ in range(4):
        fail(breaker)
        succeed(breaker)
    fail(breaker)  # 9 calls in the window
    assert state(breaker) is State.CLOSED


def test_open_time_has_jitter_of_at_most_20_percent() -> None:
    clock = FakeClock()
    breaker = make(clock, jitter=1.0)  # the top of the jitter range
    fail(breaker, 5)
    assert breaker.retry_in() == pytest.approx(36.0)
    clock.advance(35.9)
    assert breaker.acquire() is None
    clock.advance(0.2)
    assert breaker.acquire() is not None
    assert state(breaker) is State.HALF_OPEN


def test_backoff_doubles_caps_and_resets_after_close() -> None:
    clock = FakeClock()
    breaker = make(clock, open_for=30.0, max_open_for=100.0)
    fail(breaker, 5)
    assert breaker.retry_in() == pytest.approx(30.0)
    expected = [60.0, 100.0, 100.0]  # doubling, then capped
    for wait in expected:
        clock.advance(breaker.retry_in())
        fail(breaker)  # the probe fails: re-open, longer
        assert state(breaker) is State.OPEN
        assert breaker.retry_in() == pytest.approx(wait)
    clock.advance(breaker.retry_in())
    succeed(breaker)  # the probe succeeds: closed, and the backoff is back to base
    assert state(breaker) is State.CLOSED
    fail(breaker, 5)
    assert breaker.retry_in() == pytest.approx(30.0)


async def test_half_open_admits_exactly_one_of_20_concurrent_calls() -> None:
    clock = FakeClock()
    breaker = make(clock)
    fail(breaker, 5)
    clock.advance(30)
    gate = asyncio.Event()
    admitted: list[Permit] = []

    async def call() -> bool:
        permit = breaker.acquire(timeout=5)
        if permit is None:
            return False
        admitted.append(permit)
        await gate.wait()
        breaker.record(permit, Health.SUCCESS)
        return True

    tasks = [asyncio.create_task(call()) for _ in range(20)]
    await asyncio.sleep(0)
    assert len(admitted) == 1
    gate.set()
    results = await asyncio.gather(*tasks)
    assert results.count(True) == 1
    assert state(breaker) is State.CLOSED


def test_half_open_admits_the_configured_number_of_probes() -> None:
    clock = FakeClock()
    breaker = make(clock, half_open_probes=3)
    fail(breaker, 5)
    clock.advance(30)
    permits = [breaker.acquire() for _ in range(5)]
    assert sum(p is not None for p in permits) == 3
    for permit in permits[:2]:
        assert permit is not None
        breaker.record(permit, Health.SUCCESS)
    assert state(breaker) is State.HALF_OPEN  # closes only after all three succeed
    assert permits[2] is not None
    breaker.record(permits[2], Health.SUCCESS)
    assert state(breaker) is State.CLOSED


def test_a_cancelled_probe_frees_its_slot_and_counts_as_nothing() -> None:
    clock = FakeClock()
    breaker = make(clock)
    fail(breaker, 5)
    clock.advance(30)
    probe = breaker.acquire()
    assert probe is not None
    assert breaker.acquire() is None
    breaker.release(probe)  # what the router does on CancelledError
    assert state(breaker) is State.HALF_OPEN
    assert breaker.acquire() is not None


def test_a_hung_probe_frees_its_slot_after_its_timeout() -> None:
    clock = FakeClock()
    breaker = make(clock)
    fail(breaker, 5)
    clock.advance(30)
    hung = breaker.acquire(timeout=2)
    assert hung is not None
    clock.advance(1.9)
    assert breaker.acquire(timeout=2) is None
    clock.advance(0.2)
    fresh = breaker.acquire(timeout=2)
    assert fresh is not None
    breaker.record(hung, Health.FAILURE)  # too late: it no longer owns the decision
    assert state(breaker) is State.HALF_OPEN
    breaker.record(fresh, Health.SUCCESS)
    assert state(breaker) is State.CLOSED


def test_a_burst_of_failures_makes_exactly_one_transition_to_open() -> None:
    transitions: list[tuple[str, str]] = []
    breaker = make(FakeClock(), transitions=transitions)
    permits = [breaker.acquire() for _ in range(50)]  # all in flight at once
    for permit in permits:
        assert permit is not None
        breaker.record(permit, Health.FAILURE)
    assert transitions == [("closed", "open")]


def test_ignored_outcomes_do_not_count() -> None:
    breaker = make(FakeClock())
    for _ in range(20):
        permit = breaker.acquire()
        assert permit is not None
        breaker.record(permit, Health.IGNORED)
    assert state(breaker) is State.CLOSED


def test_throttle_opens_until_retry_after_without_growing_backoff() -> None:
    clock = FakeClock()
    breaker = make(clock)
    permit = breaker.acquire()
    assert permit is not None
    breaker.record(permit, Health.THROTTLED, retry_after=2.0)
    assert state(breaker) is State.OPEN
    assert breaker.retry_in() == pytest.approx(2.0)
    clock.advance(2)
    succeed(breaker)
    fail(breaker, 5)
    assert breaker.retry_in() == pytest.approx(30.0)


def test_account_errors_disable_for_max_open_for() -> None:
    clock = FakeClock()
    breaker = make(clock)
    permit = breaker.acquire()
    assert permit is not None
    breaker.record(permit, Health.DISABLED)
    assert state(breaker) is State.DISABLED
    assert breaker.retry_in() == pytest.approx(300.0)
    clock.advance(300)
    assert state(breaker) is State.DISABLED  # reading moves nothing
    assert breaker.acquire() is not None
    assert state(breaker) is State.HALF_OPEN


def test_operator_force_open_stays_open_until_closed() -> None:
    clock = FakeClock()
    breaker = make(clock)
    breaker.force_open()
    clock.advance(10_000)
    assert state(breaker) is State.OPEN
    assert breaker.acquire() is None
    breaker.force_close()
    assert state(breaker) is State.CLOSED
    assert breaker.acquire() is not None


def test_reading_an_expired_breaker_moves_nothing_the_next_call_does() -> None:
    clock = FakeClock()
    transitions: list[tuple[str, str]] = []
    breaker = make(clock, transitions=transitions)
    fail(breaker, 5)
    clock.advance(31)  # past the open period
    for _ in range(3):  # what /status, /metrics and the dashboard's poll read
        assert state(breaker) is State.OPEN
        assert breaker.retry_in() == 0.0
        assert breaker.open_until() == pytest.approx(1030.0)
    assert transitions == [("closed", "open")]
    assert breaker.acquire() is not None  # a call asks: now it is a probe
    assert state(breaker) is State.HALF_OPEN
    assert transitions == [("closed", "open"), ("open", "half_open")]


async def test_polling_status_past_the_open_period_moves_nothing_the_next_send_does(
        make_gateway: MakeGateway) -> None:
    clock = FakeClock(real=True)
    gw = await make_gateway(clock=clock)
    await gw.mode("aliyun", "down")
    for _ in range(3):  # consecutive_failures: 3
        await gw.send()
    clock.advance(300 + 1)  # past max_open_for: any jittered open period is over
    half_open = 'sms_breaker_transitions_total{provider="aliyun",state="half_open"} 1.0'
    for _ in range(3):  # what the dashboard's poll, a scraper and an operator read
        for path in ("/status", "/metrics", "/"):
            assert (await gw.client.get(path)).status == 200
    doc = await (await gw.client.get("/status")).json()
    assert doc["providers"][0]["state"] == "open"
    assert half_open not in await (await gw.client.get("/metrics")).text()
    await gw.send()  # this send asks aliyun's breaker: now it probes (and fails: still down)
    metrics = await (await gw.client.get("/metrics")).text()
    assert half_open in metrics
    assert 'sms_breaker_transitions_total{provider="aliyun",state="open"} 2.0' in metrics
