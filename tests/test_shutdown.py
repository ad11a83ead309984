"""Graceful stop under load: the real ``sms-gateway`` process, a real signal, real sockets.

The gateway runs as a subprocess (``python -m gateway``); the emulator it sends to runs in the
test's own loop, so the test can hold sends in flight with latency and count what arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.configs import gateway_config, provider
from bench.procs import free_port
from gateway.emulators import EMULATOR_CREDENTIALS, EmulatorServer

ROOT = Path(__file__).resolve().parent.parent


def config_text(*, shutdown: float, timeout: float, log: Path, endpoint: str,
                pool: int = 200) -> str:
    """One Aliyun provider (secrets from the environment), logging to ``log`` at INFO."""
    return gateway_config(
        server={"api_keys": [], "max_recipients": 5, "shutdown_timeout": f"{shutdown}s",
                "pool_size": pool, "pool_wait": "60s"},
        logging={"file": str(log), "level": "INFO"},
        defaults={"region": "CN", "timeout": f"{timeout}s", "deadline": f"{timeout}s"},
        templates=("notice",),
        providers=[provider("aliyun", endpoint=endpoint, options={"sign_name": "Test"},
                            templates=("notice",))])


BODY = {"to": ["+8613800138000"], "template": "notice", "params": {"name": "A", "time": "B"}}


@dataclass
class Running:
    """The gateway process, its URL, and the emulator behind it."""

    process: asyncio.subprocess.Process
    url: str
    port: int
    emulator: EmulatorServer
    log: Path

    async def in_flight(self, count: int,
                        session: aiohttp.ClientSession) -> list[asyncio.Task[Any]]:
        """Start ``count`` sends and return once the emulator holds every one of them."""
        tasks = [asyncio.create_task(session.post(f"{self.url}/sms", json=BODY))
                 for _ in range(count)]
        await until(lambda: self.emulator.state.counters["requests"] >= count, 10)
        return tasks

    async def sending(self, session: aiohttp.ClientSession, count: int) -> bool:
        """Whether the gateway has ``count`` sends in flight (its records say so)."""
        async with session.get(f"{self.url}/status?recent=1") as response:
            recent = (await response.json())["recent"]
        return int(sum(r["status"] == "sending" for r in recent)) >= count

    async def refuses_connections(self) -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except (ConnectionRefusedError, ConnectionResetError):  # reset: caught mid-close
            return True
        writer.close()
        return False

    async def exit_code(self, within: float) -> int:
        return await asyncio.wait_for(self.process.wait(), within)


async def until(check: Callable[[], bool | Awaitable[bool]], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


Start = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    emulator = EmulatorServer("aliyun")
    await emulator.start()
    processes: list[asyncio.subprocess.Process] = []

    async def run(*, shutdown: float, timeout: float = 10.0, pool: int = 200) -> Running:
        port = free_port()
        log = tmp_path / "gateway.log"
        config = tmp_path / "config.yaml"
        config.write_text(config_text(shutdown=shutdown, timeout=timeout, log=log,
                                      endpoint=emulator.url, pool=pool))
        creds = EMULATOR_CREDENTIALS["aliyun"]
        env = {**os.environ, "PYTHONPATH": str(ROOT),
               "ALIYUN_ACCESS_KEY_ID": creds["access_key_id"],
               "ALIYUN_ACCESS_KEY_SECRET": creds["access_key_secret"]}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "--config", str(config), "--port", str(port),
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        processes.append(process)
        running = Running(process, f"http://127.0.0.1:{port}", port, emulator, log)

        async def healthy() -> bool:
            assert process.returncode is None, log.read_text() if log.exists() else "no log"
            with contextlib.suppress(aiohttp.ClientError):
                async with aiohttp.ClientSession() as session, \
                        session.get(f"{running.url}/healthz") as response:
                    return response.status == 200
            return False

        await until(healthy, 15)
        return running

    yield run
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()
    await emulator.stop()


async def test_sigterm_with_100_sends_in_flight_answers_them_all(start: Start) -> None:
    gw = await start(shutdown=5)
    await gw.emulator.apply("latency", 1000)  # every send waits 1 s at the provider
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = await gw.in_flight(100, session)
        signalled = time.monotonic()
        gw.process.send_signal(signal.SIGTERM)
        await until(gw.refuses_connections, 0.8)  # the listener closes at once...
        assert not all(t.done() for t in tasks)  # ...while the sends are still in flight
        responses = await asyncio.gather(*tasks)
        bodies = [await r.json() for r in responses]
    assert [r.status for r in responses] == [200] * 100
    assert await gw.exit_code(within=5) == 0
    assert time.monotonic() - signalled < 5  # within server.shutdown_timeout
    ids = {b["id"] for b in bodies}
    assert len(ids) == 100
    assert all(gw.emulator.state.accepted[i] == 1 for i in ids)
    log = gw.log.read_text()
    assert "SIGTERM: stopping" in log and "stopped" in log


async def test_the_drain_is_capped_by_shutdown_timeout_and_every_caller_is_answered(
        start: Start) -> None:
    # One connection to the provider: one send is at the provider, four queue for the connection.
    gw = await start(shutdown=1, timeout=30, pool=1)
    await gw.emulator.apply("hang")  # these sends would take 30 s
    async with aiohttp.ClientSession() as session:
        held = await gw.in_flight(1, session)
        queued = [asyncio.create_task(session.post(f"{gw.url}/sms", json=BODY))
                  for _ in range(4)]
        await until(lambda: gw.sending(session, 5), 10)  # all five are in the gateway
        signalled = time.monotonic()
        gw.process.send_signal(signal.SIGTERM)
        assert await gw.exit_code(within=5) == 0
        assert time.monotonic() - signalled < 1 + 1.5
        responses = await asyncio.gather(*held, *queued)
        bodies = [await r.json() for r in responses]
    # Cut off at the deadline, each caller still gets an answer: the one whose request reached
    # the provider may have been sent (202 unknown); the ones that never left get a 503.
    assert responses[0].status == 202 and bodies[0]["status"] == "unknown", bodies[0]
    assert [r.status for r in responses[1:]] == [503] * 4, bodies[1:]
    assert all(r.headers["Retry-After"] == "1" for r in responses[1:])
    assert gw.emulator.state.counters["requests"] == 1


async def test_a_second_sigterm_during_a_long_drain_exits_at_once(start: Start) -> None:
    gw = await start(shutdown=60, timeout=60)
    await gw.emulator.apply("hang")
    async with aiohttp.ClientSession() as session:
        tasks = await gw.in_flight(5, session)
        gw.process.send_signal(signal.SIGTERM)
        await until(gw.refuses_connections, 0.8)
        assert gw.process.returncode is None  # draining, for up to 60 s
        signalled = time.monotonic()
        gw.process.send_signal(signal.SIGTERM)
        assert await gw.exit_code(within=3) != 0
        assert time.monotonic() - signalled < 1
        await asyncio.gather(*tasks, return_exceptions=True)
    assert "second SIGTERM: exiting now" in gw.log.read_text()
