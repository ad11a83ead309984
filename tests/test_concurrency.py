"""The breaker under concurrent sends, seen through HTTP against the emulators.

Latency on the emulator makes the sends overlap on the wire; a half-open test sends the rest of
its burst only once the probe has reached the emulator (a gate, not a sleep); the breaker's clock
is injected, so "open_for has passed" is a jump of the clock rather than a sleep.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from conftest import TEST_CONFIG, FakeClock, Harness, MakeGateway
from gateway.router import PROBE_GRACE

# The emulator holds each request SLOW_MS, far longer than the gateway needs to route the rest
# of a burst even on a loaded machine; the attempt timeout (5 s) outlasts it.
SLOW_MS = 2000
CONFIG = TEST_CONFIG.replace("timeout: 500ms", "timeout: 5s").replace("deadline: 3s",
                                                                      "deadline: 10s")
OPEN_FOR = 30.0  # breaker.open_for in the test config; jitter adds up to 20 %
TRANSITIONS = "gateway.observe"


@pytest.fixture
def config_text() -> str:
    return CONFIG


@pytest.fixture
async def clocked(make_gateway: MakeGateway, config_text: str) -> tuple[Harness, FakeClock]:
    # Only the breakers and deadlines read this clock; attempt timeouts run in real time.
    clock = FakeClock()
    return await make_gateway(config_text, clock=clock), clock


async def burst(gw: Harness, count: int) -> list[dict[str, Any]]:
    """``count`` sends at once; every one must be answered 200."""
    responses = await asyncio.gather(*(gw.send() for _ in range(count)))
    assert [r.status for r in responses] == [200] * count
    return [await r.json() for r in responses]


def route(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["provider"], a["outcome"]) for a in body["attempts"]]


async def open_aliyun(gw: Harness, clock: FakeClock) -> None:
    """Trip aliyun's breaker, then let its open period pass: the next call is a probe."""
    await gw.mode("aliyun", "down")
    for _ in range(3):  # consecutive_failures: 3
        await gw.send()
    assert gw.state("aliyun") == "open"
    clock.advance(OPEN_FOR * 1.2 + 1)
    assert gw.state("aliyun") == "open"  # reading moves nothing: the next send will probe


async def probe_then_rush(gw: Harness, rush: int) -> list[dict[str, Any]]:
    """One send, and once it is on aliyun's wire (the probe), ``rush`` more while it is held."""
    wire = gw.emulators["aliyun"].state.counters
    before = wire["requests"]
    probe = asyncio.create_task(gw.send())
    while wire["requests"] == before and not probe.done():  # the gate: the probe has arrived
        await asyncio.sleep(0.01)
    bodies = await burst(gw, rush)
    first = await probe
    assert first.status == 200
    return [await first.json(), *bodies]


def transitions(caplog: pytest.LogCaptureFixture, change: str) -> int:
    return sum(1 for r in caplog.records
               if r.name == TRANSITIONS and r.getMessage().startswith(f"breaker aliyun: {change}"))


async def test_half_open_admits_exactly_one_probe_of_fifty(
        clocked: tuple[Harness, FakeClock], caplog: pytest.LogCaptureFixture) -> None:
    gw, clock = clocked
    await open_aliyun(gw, clock)
    await gw.mode("aliyun", "latency", SLOW_MS)  # healthy again, slowly: 49 arrive meanwhile
    before = gw.emulators["aliyun"].state.counters["requests"]
    with caplog.at_level(logging.INFO, logger=TRANSITIONS):
        bodies = await probe_then_rush(gw, 49)
    assert gw.emulators["aliyun"].state.counters["requests"] - before == 1  # one on the wire
    routes = [route(b) for b in bodies]
    assert routes.count([("aliyun", "accepted")]) == 1
    assert routes.count([("aliyun", "skipped"), ("huawei", "accepted")]) == 49
    assert gw.state("aliyun") == "closed"
    assert transitions(caplog, "half_open -> closed") == 1


async def test_a_failed_probe_reopens_once_and_nobody_else_reaches_the_provider(
        clocked: tuple[Harness, FakeClock], caplog: pytest.LogCaptureFixture) -> None:
    gw, clock = clocked
    await open_aliyun(gw, clock)
    await gw.mode("aliyun", "fail", SLOW_MS)  # isp.SYSTEM_ERROR, late: 49 arrive meanwhile
    before = gw.emulators["aliyun"].state.counters["requests"]
    with caplog.at_level(logging.INFO, logger=TRANSITIONS):
        bodies = await probe_then_rush(gw, 49)  # verify_code fails over: every send lands
    assert gw.emulators["aliyun"].state.counters["requests"] - before == 1
    routes = [route(b) for b in bodies]
    assert routes.count([("aliyun", "unknown"), ("huawei", "accepted")]) == 1
    assert routes.count([("aliyun", "skipped"), ("huawei", "accepted")]) == 49
    assert gw.state("aliyun") == "open"
    assert transitions(caplog, "half_open -> open") == 1


async def test_a_burst_of_failures_opens_the_breaker_once(
        make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture) -> None:
    gw = await make_gateway(CONFIG)
    await gw.mode("aliyun", "fail", SLOW_MS)  # 20 calls in flight when the failures come back
    with caplog.at_level(logging.INFO, logger=TRANSITIONS):
        bodies = await burst(gw, 20)
    assert gw.emulators["aliyun"].state.counters["requests"] == 20  # all admitted while closed
    assert all(route(b) == [("aliyun", "unknown"), ("huawei", "accepted")] for b in bodies)
    assert gw.state("aliyun") == "open"
    assert transitions(caplog, "closed -> open") == 1
    assert sum(1 for r in caplog.records if r.name == TRANSITIONS) == 1  # nothing else moved
    metrics = await (await gw.client.get("/metrics")).text()
    assert 'sms_breaker_transitions_total{provider="aliyun",state="open"} 1.0' in metrics


# aliyun's attempts time out after 1 s; huawei, the fallback, has room to spare under load.
HUNG = CONFIG.replace("    priority: 1\n", "    priority: 1\n    timeout: 1s\n")


@pytest.mark.parametrize("config_text", [HUNG])
async def test_a_hung_probe_keeps_its_slot_through_its_grace_and_reopens_the_breaker(
        clocked: tuple[Harness, FakeClock], caplog: pytest.LogCaptureFixture) -> None:
    """The probe's own timeout decides. Sends arriving after the probe's timeout but within its
    grace (as the breaker's clock sees it) must not take over its slot and leave the breaker
    half-open, probing a hung provider once a timeout; the probe's failure reopens it once."""
    gw, clock = clocked
    await open_aliyun(gw, clock)
    await gw.mode("aliyun", "hang")
    wire = gw.emulators["aliyun"].state.counters
    before = wire["requests"]
    with caplog.at_level(logging.INFO, logger=TRANSITIONS):
        probe = asyncio.create_task(gw.send())
        while wire["requests"] == before and not probe.done():  # the gate: the probe hangs
            await asyncio.sleep(0.01)
        clock.advance(1.0 + PROBE_GRACE / 2)  # its timeout has passed; its grace has not
        rush = await asyncio.gather(*(gw.send() for _ in range(20)))
        answers = [await r.json() for r in rush]
        assert (await probe).status == 200  # verify_code fails over to huawei
    assert [r.status for r in rush] == [200] * 20
    assert all(route(a) == [("aliyun", "skipped"), ("huawei", "accepted")] for a in answers)
    assert wire["requests"] - before == 1  # nobody took the hung probe's slot
    assert gw.state("aliyun") == "open"
    assert transitions(caplog, "half_open -> open") == 1
