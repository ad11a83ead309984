"""kill -9 in the middle of synchronous sends: a real gateway process on a SQLite file.

Every send that was answered is in the store after the restart; a send whose provider call was
in flight is settled ``unknown`` (maybe sent), never left ``sending``; and its Idempotency-Key,
claimed by the dead process, is answered from the record instead of 409 until its ttl.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
from gatewayproc import running

from conftest import build_config

SLOW_MS = 1500  # the provider's answer time while the process is killed; under the timeout
NUMBERS = ["+8613800138001", "+8613800138002", "+8613800138003"]


def body(number: str, code: str = "1234") -> dict[str, Any]:
    return {"to": number, "template": "verify_code", "params": {"code": code}}


async def fetch(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_kill_9_mid_flight_loses_no_answered_send_and_settles_the_rest(
        tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(build_config(
        server={"pool_wait": "100ms"}, defaults={"timeout": "2s", "deadline": "2s"},
        storage={"url": "sqlite:///store.db"}))
    console = tmp_path / "console.log"
    answered: dict[str, str] = {}
    async with running(config, "--emulate", console=console) as gw, \
            aiohttp.ClientSession() as http:
        for i in range(6):
            headers = {"Idempotency-Key": f"done-{i}"} if i % 2 else {}
            async with http.post(f"{gw.url}/sms", json=body("+8613900139000", str(i)),
                                 headers=headers) as response:
                assert response.status == 200
                answered[(await response.json())["id"]] = headers.get("Idempotency-Key", "")
        async with http.post(f"{gw.url}/_emulator/aliyun",
                             json={"mode": "latency", "latency_ms": SLOW_MS}) as response:
            assert response.status == 200
        flying = [asyncio.create_task(http.post(
            f"{gw.url}/sms", json=body(number),
            headers={"Idempotency-Key": "crash-1"} if number == NUMBERS[0] else {}))
            for number in NUMBERS]
        async with asyncio.timeout(10):  # every record (with its first attempt) is written
            while len((await fetch(http, f"{gw.url}/sms?status=sending"))["items"]) < 3:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # the provider calls are under way
        gw.process.kill()
        await gw.process.wait()
        for task in flying:  # nobody got an answer
            with contextlib.suppress(aiohttp.ClientError):
                response = await task
                raise AssertionError(f"answered {response.status} from a killed process")

    async with running(config, "--emulate", console=console) as gw, \
            aiohttp.ClientSession() as http:
        for message_id in answered:  # everything answered is there, as answered
            record = await fetch(http, f"{gw.url}/sms/{message_id}")
            assert record["status"] == "sent"
        keyed = next(m for m, key in answered.items() if key)
        async with http.post(f"{gw.url}/sms", json=body("+8613900139000", "1"),
                             headers={"Idempotency-Key": answered[keyed]}) as response:
            assert response.status == 200 and response.headers["Idempotent-Replayed"] == "true"
            assert (await response.json())["id"] == keyed

        # The dead process's claim answers 409 while a send could still be in flight, then
        # from the record: nothing is sent again.
        async with asyncio.timeout(30):
            while True:
                async with http.post(f"{gw.url}/sms", json=body(NUMBERS[0]),
                                     headers={"Idempotency-Key": "crash-1"}) as response:
                    replay = await response.json()
                    if response.status != 409:
                        break
                await asyncio.sleep(0.25)
            assert response.status == 202 and response.headers["Idempotent-Replayed"] == "true"
        assert replay["status"] == "unknown" and replay["to"] == [NUMBERS[0]]

        async with asyncio.timeout(30):  # the other two are settled by the periodic pass
            while (await fetch(http, f"{gw.url}/sms?status=sending"))["items"]:
                await asyncio.sleep(0.25)
        unknown = (await fetch(http, f"{gw.url}/sms?status=unknown"))["items"]
        assert len(unknown) == 3 and replay["id"] in {r["id"] for r in unknown}
        for record in unknown:
            assert record["final_at"] is not None and "params" not in record
            assert "interrupted by a restart" in record["error"]
            assert record["provider"] == "aliyun"
            assert [(a["provider"], a["outcome"]) for a in record["attempts"]] == [
                ("aliyun", "unknown")]
        listed = (await fetch(http, f"{gw.url}/sms?limit=20"))["items"]
        assert len(listed) == len(answered) + 3
        emulator = await fetch(http, f"{gw.url}/_emulator/aliyun")
        assert emulator["counters"]["requests"] == 0  # the replay contacted no provider
        async with http.post(f"{gw.url}/sms", json=body(NUMBERS[0]),
                             headers={"Idempotency-Key": "crash-1"}) as response:
            assert response.status == 202 and (await response.json())["id"] == replay["id"]
