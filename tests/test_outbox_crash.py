"""The outbox survives kill -9 (SPEC §8, issue 11's "done means").

500 async messages are queued with a real gateway process, the emulators slow; the process is
killed with SIGKILL twice while the outbox drains and started again on the same store. Then
every message is final, and what the emulators received, counted by our id (Aliyun OutId,
Huawei extend), says: none lost, none sent twice; a message may be ``unknown`` only where a
kill cut its attempt short (then the emulator got it once or not at all).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gatewayproc import Gateway, running, until

from bench.configs import gateway_config, provider
from gateway.emulators import EmulatorServer, start_emulators
from gateway.store import FINAL

MESSAGES = 500
NOTICE = {"template": "notice", "params": {"name": "Li", "time": "9:00"}, "mode": "async"}


@pytest.fixture
async def slow_emulators() -> AsyncIterator[dict[str, EmulatorServer]]:
    servers = await start_emulators(kinds=("aliyun", "huawei"))
    for server in servers.values():
        server.state.set_mode("latency", 150)
    try:
        yield servers
    finally:
        for server in servers.values():
            await server.stop()


def crash_config(urls: dict[str, str], store: Path) -> str:
    return gateway_config(
        server={"api_keys": [], "max_recipients": 5, "shutdown_timeout": "1s"},
        logging={"level": "WARNING", "file": None},
        defaults={"region": "CN", "timeout": "2s", "deadline": "5s"},
        providers=[provider("aliyun", priority=1, endpoint=urls["aliyun"], inline=True),
                   provider("huawei", priority=2, endpoint=urls["huawei"], inline=True)],
        storage={"url": f"sqlite:///{store}", "workers": 20, "lease": "1s"})


async def _queue(url: str) -> list[str]:
    """Queue MESSAGES messages, 50 at a time; their ids (each answered 202 queued)."""
    ids: list[str] = []
    async with aiohttp.ClientSession() as session:

        async def one(index: int) -> str:
            body = {**NOTICE, "to": f"+86138{index:08d}"}
            async with session.post(f"{url}/sms", json=body) as response:
                assert response.status == 202, await response.text()
                answer: dict[str, Any] = await response.json()
                return str(answer["id"])

        for start in range(0, MESSAGES, 50):
            ids += await asyncio.gather(*(one(i) for i in range(start, start + 50)))
    return ids


async def _records(url: str) -> dict[str, dict[str, Any]]:
    """Every record by id, through GET /sms pages."""
    found: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    async with aiohttp.ClientSession() as session:
        while True:
            query = {"limit": "500", **({"cursor": cursor} if cursor else {})}
            async with session.get(f"{url}/sms", params=query) as response:
                page = await response.json()
            found.update({item["id"]: item for item in page["items"]})
            cursor = page["next_cursor"]
            if cursor is None:
                return found


async def _kill_when(gateway: Gateway, condition: Callable[[], bool]) -> None:
    await until(condition, within=30)
    gateway.signal(signal.SIGKILL)
    await gateway.process.wait()


async def test_kill_9_twice_mid_drain_loses_nothing_and_sends_nothing_twice(
        slow_emulators: dict[str, EmulatorServer], tmp_path: Path) -> None:
    urls = {kind: server.url for kind, server in slow_emulators.items()}
    config = tmp_path / "config.yaml"
    config.write_text(crash_config(urls, tmp_path / "store.db"))
    console = tmp_path / "console.log"
    received = slow_emulators["aliyun"].state.accepted

    def got(count: int) -> Callable[[], bool]:
        return lambda: sum(received.values()) >= count

    async with running(config, console=console) as first:
        ids = await _queue(first.url)
        await _kill_when(first, got(100))
    async with running(config, console=console) as second:
        await _kill_when(second, got(250))
    async with running(config, console=console) as third:

        async def final() -> bool:
            records = await _records(third.url)
            return len(records) == MESSAGES and all(
                r["status"] in FINAL for r in records.values())

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 40
        while not await final():
            assert loop.time() < deadline, "the outbox did not drain"
            await asyncio.sleep(0.2)
        records = await _records(third.url)

    assert sorted(records) == sorted(ids)  # nothing lost
    by_status: dict[str, list[str]] = {}
    for message_id, found in records.items():
        by_status.setdefault(found["status"], []).append(message_id)
    counts = {k: len(v) for k, v in by_status.items()}
    assert set(by_status) <= {"sent", "unknown"}, counts
    backup = slow_emulators["huawei"].state.accepted
    for message_id in by_status.get("sent", []):  # exactly once, by our id
        assert received[message_id] + backup[message_id] == 1, message_id
    for message_id in by_status.get("unknown", []):  # a kill cut its attempt: at most once
        assert received[message_id] + backup[message_id] <= 1, message_id
        assert records[message_id]["attempts"][-1]["outcome"] == "unknown"
    # the kills cut at most one batch of in-flight sends each
    assert len(by_status.get("unknown", [])) <= 2 * 20
    assert len(by_status["sent"]) >= MESSAGES - 2 * 20
