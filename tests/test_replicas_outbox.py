"""Replicas on one PostgreSQL database share the outbox, the limits and the receipts (SPEC §11):
two real gateway processes (tests/replicas.py), the emulators counting what they get by our id
(Aliyun OutId, Huawei extend), as tests/test_outbox_crash.py does.
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from replicas import (  # noqa: F401 - the fixtures
    Replicas,
    eventually,
    replica_db_fixture,
    replica_server_fixture,
    two_replicas,
)

from gateway.outbox import POLL
from gateway.store import FINAL

NOTICE = {"template": "notice", "params": {"name": "Li", "time": "9:00"}, "mode": "async"}
TOKEN = "replica-receipt-token-0123456789"


async def queue(replicas: Replicas, index: int, number: int) -> str:
    """Queue one async notice on replica ``index`` to a number of its own; the message id."""
    status, body = await replicas.send(replicas.gateways[index],
                                       body={**NOTICE, "to": [f"+86138{number:08d}"]})
    assert status == 202, body
    return str(body["id"])


def received(replicas: Replicas, message_id: str) -> int:
    """How many times the emulated providers accepted ``message_id``."""
    return sum(s.state.accepted[message_id] for s in replicas.emulators.values())


async def outbox(replicas: Replicas, index: int) -> dict[str, Any]:
    _, status = await replicas.call(replicas.gateways[index], "GET", "/status")
    found: dict[str, Any] = status["outbox"]
    return found


async def records(replicas: Replicas, index: int) -> dict[str, dict[str, Any]]:
    """Every record by id, through replica ``index``'s GET /sms pages."""
    found: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    while True:
        query = "?limit=500" + (f"&cursor={cursor}" if cursor else "")
        status, page = await replicas.call(replicas.gateways[index], "GET", "/sms" + query)
        assert status == 200, page
        found.update({item["id"]: item for item in page["items"]})
        cursor = page["next_cursor"]
        if cursor is None:
            return found


async def all_final(replicas: Replicas, index: int, ids: list[str]) -> bool:
    found = await records(replicas, index)
    return all(message_id in found and found[message_id]["status"] in FINAL
               for message_id in ids)


async def test_a_message_queued_on_an_intake_only_replica_is_sent_by_the_other_when_notified(
        tmp_path: Path, replica_db: str) -> None:
    sections = [{"storage": {"workers": 0}}, {"storage": {"workers": 4}}]  # A takes, B sends
    async with two_replicas(tmp_path, [replica_db, replica_db], sections=sections) as replicas:
        first = await queue(replicas, 0, 0)  # B's LISTEN is up by the time this is sent

        def sent(message_id: str) -> Callable[[], Coroutine[Any, Any, bool]]:
            async def check() -> bool:
                return received(replicas, message_id) == 1
            return check

        await eventually(sent(first), within=10.0, every=0.05)
        before_a, before_b = await outbox(replicas, 0), await outbox(replicas, 1)
        latencies = []
        for number in range(1, 6):  # seconds from A's 202 to the emulator's receipt of it
            message_id = await queue(replicas, 0, number)
            latencies.append(await eventually(sent(message_id), within=10.0, every=0.05))
        after_a, after_b = await outbox(replicas, 0), await outbox(replicas, 1)
        # every enqueue on A was followed by a NOTIFY, and each one woke B's claim loop
        assert after_a["notified"] - before_a["notified"] >= 5
        assert after_b["woken_by_others"] - before_b["woken_by_others"] >= 5
        assert after_a["in_flight"] == 0 and after_a["workers"] == 0  # A sent none of them
        # polling alone would find a message after POLL/2 on average: woken, B is quicker
        assert statistics.median(latencies) < POLL / 2, latencies


async def test_a_per_number_limit_holds_across_replicas(tmp_path: Path, replica_db: str) -> None:
    limit = {"limits": [{"per": "number", "template": "verify_code", "max": 1, "window": "1m"}]}
    async with two_replicas(tmp_path, [replica_db, replica_db],
                            sections=[limit, limit]) as replicas:
        status, body = await replicas.send(replicas.a)
        assert status == 200, body
        called = replicas.provider_requests()
        async with replicas.session.post(replicas.b.url + "/sms", json={
                "to": ["+8613800138000"], "template": "verify_code",
                "params": {"code": "5678"}}) as response:
            refused = await response.json()
            assert response.status == 429, refused
            assert 0 < int(response.headers["Retry-After"]) <= 60
        assert replicas.provider_requests() == called  # B asked no provider
        status, _ = await replicas.send(replicas.b, body={  # another number is not limited
            "to": ["+8613800138001"], "template": "verify_code", "params": {"code": "1"}})
        assert status == 200


async def test_async_messages_queued_on_both_replicas_are_each_sent_exactly_once(
        tmp_path: Path, replica_db: str) -> None:
    async with two_replicas(tmp_path, [replica_db, replica_db]) as replicas:
        for server in replicas.emulators.values():
            server.state.set_mode("latency", 20)
        ids: list[str] = []
        for start in range(0, 200, 40):  # alternating A, B; 40 requests at a time
            ids += await asyncio.gather(*(queue(replicas, n % 2, n)
                                          for n in range(start, start + 40)))
        assert len(set(ids)) == 200
        await eventually(lambda: all_final(replicas, 0, ids), within=40.0, every=0.05)
        found = await records(replicas, 1)
        assert {found[i]["status"] for i in ids} == {"sent"}
        assert [i for i in ids if received(replicas, i) != 1] == []  # each exactly once
        for index in (0, 1):  # and both replicas took their share of the sending
            assert (await outbox(replicas, index))["sending_per_second"] > 0


async def test_a_receipt_posted_to_b_updates_a_message_sent_by_a(tmp_path: Path,
                                                                replica_db: str) -> None:
    receipts = {"receipts": {"token": TOKEN}}
    async with two_replicas(tmp_path, [replica_db, replica_db],
                            sections=[receipts, receipts]) as replicas:
        aliyun = replicas.emulators["aliyun"].state
        aliyun.receipt_url = f"{replicas.b.url}/receipts/aliyun/{TOKEN}"  # to B only
        aliyun.set_receipts("deliver", 0.05)
        status, body = await replicas.send(replicas.a)
        assert status == 200 and body["provider"] == "aliyun", body

        async def delivered() -> bool:
            _, found = await replicas.call(replicas.a, "GET", f"/sms/{body['id']}")
            return bool(found["status"] == "delivered")

        await eventually(delivered, within=10.0, every=0.05)
        _, found = await replicas.call(replicas.a, "GET", f"/sms/{body['id']}")
        [delivery] = found["deliveries"]
        assert delivery["status"] == "delivered" and delivery["code"] == "DELIVERED"
        _, status = await replicas.call(replicas.b, "GET", "/status")  # B took the receipt
        row = next(p for p in status["providers"] if p["name"] == "aliyun")
        assert row["receipts"]["receipts"] == 1, row


async def test_a_replica_killed_mid_drain_has_its_leased_messages_taken_over(
        tmp_path: Path, replica_db: str) -> None:
    lease = 2.0
    storage = {"storage": {"workers": 10, "lease": f"{lease:g}s"}}
    async with two_replicas(tmp_path, [replica_db, replica_db],
                            sections=[storage, storage]) as replicas:
        for server in replicas.emulators.values():
            server.state.set_mode("latency", 200)
        ids: list[str] = []
        for start in range(0, 120, 40):
            ids += await asyncio.gather(*(queue(replicas, 0, n)
                                          for n in range(start, start + 40)))

        async def some_sent() -> bool:
            return sum(received(replicas, i) for i in ids) >= 20

        await eventually(some_sent, within=20.0, every=0.05)
        assert (await outbox(replicas, 0))["in_flight"] > 0  # A is mid-drain
        replicas.a.signal(signal.SIGKILL)
        await replicas.a.process.wait()
        killed = time.monotonic()
        await eventually(lambda: all_final(replicas, 1, ids), within=30.0, every=0.05)
        # B drains the rest alone: what A held comes back once its leases run out
        assert time.monotonic() - killed < lease + 20.0
        found = await records(replicas, 1)
        by_status: dict[str, list[str]] = {}
        for message_id in ids:
            by_status.setdefault(found[message_id]["status"], []).append(message_id)
        counts = {k: len(v) for k, v in by_status.items()}
        assert set(by_status) <= {"sent", "unknown"}, counts
        for message_id in by_status.get("sent", []):
            assert received(replicas, message_id) == 1, message_id
        for message_id in by_status.get("unknown", []):  # the kill cut its attempt: at most once
            assert received(replicas, message_id) <= 1, message_id
            assert found[message_id]["attempts"][-1]["outcome"] == "unknown"
        assert len(by_status.get("unknown", [])) <= 10  # at most A's in-flight sends
