"""The breaker under concurrent sends, seen through HTTP against the emulators.

Latency on the emulator makes the sends overlap on the wire; the breaker's clock is injected, so
"open_for has passed" is a jump of the clock rather than a sleep.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import TEST_CONFIG, Harness
from gateway.app import create_app
from gateway.cli import emulated_loader
from gateway.emulators import EmulatorServer

# A 2 s attempt timeout: a probe waiting on 500 ms of latency must keep its half-open slot.
CONFIG = TEST_CONFIG.replace("timeout: 500ms", "timeout: 2s").replace("deadline: 3s",
                                                                      "deadline: 5s")
OPEN_FOR = 30.0  # breaker.open_for in the test config; jitter adds up to 20 %
TRANSITIONS = "gateway.runtime"


class Clock:
    """Monotonic time that a test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def config_text() -> str:
    return CONFIG


@pytest.fixture
async def clocked(aiohttp_client: Any, emulators: dict[str, EmulatorServer],
                  tmp_path: Path, config_text: str) -> tuple[Harness, Clock]:
    path = tmp_path / "config.yaml"
    path.write_text(config_text)
    loader = emulated_loader(path, emulators)
    clock = Clock()
    app = create_app(loader(), config_path=path, loader=loader, emulators=emulators, clock=clock)
    return Harness(await aiohttp_client(app), emulators, path), clock


async def burst(gw: Harness, count: int) -> list[dict[str, Any]]:
    """``count`` sends at once; every one must be answered 200."""
    responses = await asyncio.gather(*(gw.send() for _ in range(count)))
    assert [r.status for r in responses] == [200] * count
    return [await r.json() for r in responses]


def route(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["provider"], a["outcome"]) for a in body["attempts"]]


async def open_aliyun(gw: Harness, clock: Clock) -> None:
    """Trip aliyun's breaker, then let its open period pass: the next call is a probe."""
    await gw.mode("aliyun", "down")
    for _ in range(3):  # consecutive_failures: 3
        await gw.send()
    assert gw.state("aliyun") == "open"
    clock.advance(OPEN_FOR * 1.2 + 1)
    assert gw.state("aliyun") == "half_open"


def transitions(caplog: pytest.LogCaptureFixture, change: str) -> int:
    return sum(1 for r in caplog.records
               if r.name == TRANSITIONS and r.getMessage().startswith(f"breaker aliyun: {change}"))


async def test_half_open_admits_exactly_one_probe_of_fifty(
        clocked: tuple[Harness, Clock], caplog: pytest.LogCaptureFixture) -> None:
    gw, clock = clocked
    await open_aliyun(gw, clock)
    await gw.mode("aliyun", "latency", 500)  # healthy again, slowly: the 50 overlap the probe
    before = gw.emulators["aliyun"].state.counters["requests"]
    with caplog.at_level(logging.INFO, logger=TRANSITIONS):
        bodies = await burst(gw, 50)
    assert gw.emulators["aliyun"].state.counters["requests"] - before == 1  # one on the wire
    routes = [route(b) for b in bodies]
    assert routes.count([("aliyun", "accepted")]) == 1
    assert routes.count([("aliyun", "skipped"), ("huawei", "accepted")]) == 49
    assert gw.state("aliyun") == "closed"
    assert transitions(caplog, "half_open -> closed") == 1


async def test_a_failed_probe_reopens_once_and_nobody_else_reaches_the_provider(
        clocked: tuple[Harness, Clock], caplog: pytest.LogCaptureFixture) -> None:
    gw, clock = clocked
    await open_aliyun(gw, clock)
    await gw.mode("aliyun", "fail", 500)  # isp.SYSTEM_ERROR after 500 ms
    before = gw.emulators["aliyun"].state.counters["requests"]
    with caplog.at_level(logging.INFO, logger=TRANSITIONS):
        bodies = await burst(gw, 50)  # verify_code fails over: every send still lands
    assert gw.emulators["aliyun"].state.counters["requests"] - before == 1
    routes = [route(b) for b in bodies]
    assert routes.count([("aliyun", "unknown"), ("huawei", "accepted")]) == 1
    assert routes.count([("aliyun", "skipped"), ("huawei", "accepted")]) == 49
    assert gw.state("aliyun") == "open"
    assert transitions(caplog, "half_open -> open") == 1


async def test_a_burst_of_failures_opens_the_breaker_once(
        gw: Harness, caplog: pytest.LogCaptureFixture) -> None:
    await gw.mode("aliyun", "fail", 300)  # 20 calls in flight when the failures come back
    with caplog.at_level(logging.INFO, logger=TRANSITIONS):
        bodies = await burst(gw, 20)
    assert gw.emulators["aliyun"].state.counters["requests"] == 20  # all admitted while closed
    assert all(route(b) == [("aliyun", "unknown"), ("huawei", "accepted")] for b in bodies)
    assert gw.state("aliyun") == "open"
    assert transitions(caplog, "closed -> open") == 1
    assert sum(1 for r in caplog.records if r.name == TRANSITIONS) == 1  # nothing else moved
    metrics = await (await gw.client.get("/metrics")).text()
    assert 'sms_breaker_transitions_total{provider="aliyun",state="open"} 1.0' in metrics


@pytest.mark.parametrize("config_text", [TEST_CONFIG])  # 500 ms attempts
async def test_a_hung_probe_reopens_the_breaker_despite_traffic_as_it_times_out(
        clocked: tuple[Harness, Clock], caplog: pytest.LogCaptureFixture) -> None:
    """The probe's own timeout decides; sends arriving just as it times out must not take over
    its slot and leave the breaker half-open, probing a hung provider once a timeout."""
    gw, clock = clocked
    await open_aliyun(gw, clock)
    await gw.mode("aliyun", "hang")
    before = gw.emulators["aliyun"].state.counters["requests"]
    with caplog.at_level(logging.INFO, logger=TRANSITIONS):
        probe = asyncio.create_task(gw.send())
        await asyncio.sleep(0.44)
        rush = []
        for _ in range(8):  # sends keep arriving while the probe times out (at 500 ms)
            rush += [asyncio.create_task(gw.send()) for _ in range(20)]
            await asyncio.sleep(0.01)
        responses = await asyncio.gather(probe, *rush)
    assert [r.status for r in responses] == [200] * 161  # verify_code fails over to huawei
    assert gw.emulators["aliyun"].state.counters["requests"] - before == 1
    assert gw.state("aliyun") == "open"
    assert transitions(caplog, "half_open -> open") == 1
