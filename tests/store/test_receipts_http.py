"""Delivery receipts end to end (SPEC §9): a send through each emulator, the emulator's receipt
posted back to the gateway's receipt route, the record moved on. Each test runs on SQLite and
on PostgreSQL (see tests/store/conftest.py).

The emulators post receipts on real sockets after ``receipt_delay`` (50 ms here), so these
tests wait for what the receipt does, with a deadline, instead of sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from gatewayproc import free_port

from bench.configs import provider, render
from conftest import NUMBER, Harness, build_config
from gateway.app import create_app
from gateway.cli import emulated_loader
from gateway.emulators import EmulatorServer
from gateway.store import NewMessage, StoreUnavailableError

TOKEN = "test-receipt-token-0123456789"
# Aliyun writes report times in Beijing time; "now" keeps them plausible whenever this runs
BEIJING_NOW = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 8 * 3600))
MakeReceiving = Callable[..., Awaitable[Harness]]


def receipts_config(url: str, public_url: str | None = None, **options: Any) -> str:
    """The test config on ``url`` with a ``receipts`` section."""
    block: dict[str, Any] = {"token": TOKEN}
    if public_url:
        block["public_url"] = public_url
    return build_config(storage={"url": url}, **options) + render({"receipts": block})


@pytest.fixture
async def receiving(aiohttp_client: Any, emulators: dict[str, EmulatorServer], tmp_path: Path,
                    store_url: str) -> MakeReceiving:
    """A gateway whose emulators post receipts back to it: Aliyun to its console URL (set
    here), Huawei to the statusCallback its sends carry (receipts.public_url)."""

    async def make(**options: Any) -> Harness:
        port = free_port()  # known before the config is written: public_url names it
        path = tmp_path / "config.yaml"
        path.write_text(receipts_config(store_url, f"http://127.0.0.1:{port}", **options))
        loader = emulated_loader(path, emulators)
        app = create_app(loader(), config_path=path, loader=loader, emulators=emulators)
        client = await aiohttp_client(app, server_kwargs={"port": port})
        for kind, server in emulators.items():
            server.state.receipt_url = str(client.make_url(f"/receipts/{kind}/{TOKEN}"))
            server.state.set_receipts("deliver", 0.05)
        return Harness(client, emulators, path)

    return make


async def record(gw: Harness, message_id: str) -> dict[str, Any]:
    response = await gw.client.get(f"/sms/{message_id}")
    assert response.status == 200
    found: dict[str, Any] = await response.json()
    return found


async def settled(gw: Harness, message_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The record once a receipt moved it to delivered or undelivered."""
    deadline = time.monotonic() + timeout
    while True:
        found = await record(gw, message_id)
        if found["status"] in ("delivered", "undelivered") or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.02)


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def sent(gw: Harness, **send: Any) -> str:
    response = await gw.send(**send)
    assert response.status == 200, await response.text()
    message_id: str = (await response.json())["id"]
    return message_id


async def metric(gw: Harness, provider_name: str, status: str) -> float:
    text = await (await gw.client.get("/metrics")).text()
    line = f'sms_receipts_total{{provider="{provider_name}",status="{status}"}} '
    for row in text.splitlines():
        if row.startswith(line):
            return float(row[len(line):])
    return 0.0


async def test_an_aliyun_send_is_delivered(receiving: MakeReceiving) -> None:
    gw = await receiving()
    message_id = await sent(gw)
    found = await settled(gw, message_id)
    assert found["status"] == "delivered"
    assert found["http_status"] == 200  # it was sent: the answer it stands for is still 200
    [delivery] = found["deliveries"]
    assert delivery["to"] == "+86138******00" and delivery["status"] == "delivered"
    assert delivery["code"] == "DELIVERED" and delivery["at"] > 0
    status = await (await gw.client.get("/status")).json()
    aliyun = next(p for p in status["providers"] if p["name"] == "aliyun")
    assert aliyun["receipts"]["ratio"] == 1.0 and aliyun["receipts"]["receipts"] == 1
    assert aliyun["receipts"]["median_delivery_s"] is not None
    assert await metric(gw, "aliyun", "delivered") == 1
    assert TOKEN not in json.dumps(status)


async def test_a_huawei_send_carries_its_status_callback_and_is_delivered(
        receiving: MakeReceiving) -> None:
    gw = await receiving(providers=[provider("huawei")])
    message_id = await sent(gw)
    found = await settled(gw, message_id)
    assert found["status"] == "delivered" and found["provider"] == "huawei"
    [message] = gw.emulators["huawei"].state.messages
    assert message["status_callback"] == str(gw.client.make_url(f"/receipts/huawei/{TOKEN}"))
    assert found["deliveries"][0]["code"] == "DELIVRD"


async def test_undelivered_shows_the_code(receiving: MakeReceiving) -> None:
    gw = await receiving()
    gw.emulators["aliyun"].state.set_receipts("undeliver")
    found = await settled(gw, await sent(gw))
    assert found["status"] == "undelivered" and found["http_status"] == 200
    assert found["deliveries"] == [{"to": "+86138******00", "status": "undelivered",
                                    "code": "MN:0001", "at": found["deliveries"][0]["at"]}]
    status = await (await gw.client.get("/status")).json()
    aliyun = next(p for p in status["providers"] if p["name"] == "aliyun")
    assert aliyun["receipts"]["ratio"] == 0.0


async def test_duplicates_change_nothing(receiving: MakeReceiving) -> None:
    gw = await receiving()
    gw.emulators["aliyun"].state.set_receipts("duplicate")
    message_id = await sent(gw)
    found = await settled(gw, message_id)
    assert found["status"] == "delivered" and len(found["deliveries"]) == 1
    await until(lambda: gw.emulators["aliyun"].state.counters["receipts"] >= 1)
    assert await metric(gw, "aliyun", "duplicate") == 1
    assert await metric(gw, "aliyun", "delivered") == 1


async def test_a_late_contradicting_receipt_changes_nothing(receiving: MakeReceiving) -> None:
    gw = await receiving(providers=[provider("huawei")])
    gw.emulators["huawei"].state.set_receipts("late")
    message_id = await sent(gw)
    first = await settled(gw, message_id)
    assert first["status"] == "delivered"
    await until(lambda: gw.emulators["huawei"].state.counters["receipts"] == 2)
    again = await record(gw, message_id)
    assert again["status"] == "delivered" and again["deliveries"] == first["deliveries"]
    assert await metric(gw, "huawei", "duplicate") == 1


async def test_a_receipt_that_beats_its_record_is_parked_then_applied(
        receiving: MakeReceiving) -> None:
    gw = await receiving(providers=[provider("huawei")])
    gw.emulators["huawei"].state.set_receipts(delay=0)  # posted before the send is answered
    message_id = await sent(gw)
    assert await metric(gw, "huawei", "parked") == 1  # no per-recipient id was stored yet
    found = await settled(gw, message_id)
    assert found["status"] == "delivered"
    assert await gw.gateway.store.receipts.parked() == 0


async def test_a_multi_recipient_huawei_batch_with_mixed_outcomes(
        receiving: MakeReceiving) -> None:
    gw = await receiving(providers=[provider("huawei")])
    to = ["+8613800138000", "+8613900099916", "+8613900099915"]  # delivered, undelivered, refused
    response = await gw.send(to=to)
    assert response.status == 200
    body = await response.json()
    assert body["refused"] == [{"to": "+8613900099915", "error": "E200015"}]
    found = await settled(gw, body["id"])
    assert found["status"] == "undelivered"
    assert {(d["to"], d["status"]) for d in found["deliveries"]} == {
        ("+86138******00", "delivered"), ("+86139******16", "undelivered")}
    assert found["refused"][0]["to"] == "+86139******15"


async def test_a_wrong_token_is_404_logged_and_changes_nothing(
        receiving: MakeReceiving, caplog: pytest.LogCaptureFixture) -> None:
    gw = await receiving()
    gw.emulators["aliyun"].state.set_receipts("none")
    message_id = await sent(gw)
    report = [{"phone_number": "13800138000", "success": True, "err_code": "DELIVERED",
               "report_time": BEIJING_NOW, "biz_id": "1", "out_id": message_id}]
    with caplog.at_level(logging.WARNING, logger="gateway.receipts"):
        wrong = await gw.client.post("/receipts/aliyun/not-the-token", json=report)
        form = await gw.client.post("/receipts/huawei/x", data={"smsMsgId": "1",
                                                                "status": "DELIVRD"})
    assert wrong.status == 404 and form.status == 404
    assert "127.0.0.1" in caplog.text and "not-the-token" not in caplog.text
    assert (await record(gw, message_id))["status"] == "sent"
    right = await gw.client.post(f"/receipts/aliyun/{TOKEN}", json=report)
    assert right.status == 200 and await right.json() == {"code": 0, "msg": "ok"}
    assert (await record(gw, message_id))["status"] == "delivered"


async def test_hostile_aliyun_pushes_are_400_and_write_nothing(
        receiving: MakeReceiving) -> None:
    gw = await receiving()
    gw.emulators["aliyun"].state.set_receipts("none")
    message_id = await sent(gw)
    good = {"phone_number": "13800138000", "success": True, "err_code": "DELIVERED",
            "report_time": BEIJING_NOW, "biz_id": "1", "out_id": message_id}
    url = f"/receipts/aliyun/{TOKEN}"
    bodies: list[Any] = [
        b"not json", b"{\"a\": 1}", b"[" * 100_000, [{}] * 10_000, [{}],
        [good, {**good, "success": "yes"}],  # one bad report: the good one is not applied
        [{**good, "report_time": "9999-01-01 00:00:00"}],
        [{**good, "report_time": "1970-01-01 00:00:00"}],
        [{**good, "phone_number": ["x"]}], [{**good, "out_id": "x" * 10_000}],
        [{**good, "phone_number": "\u0000\u0001"}], [None],
    ]
    for body in bodies:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = await gw.client.post(url, data=io.BytesIO(data),
                                        headers={"Content-Type": "application/json"})
        assert response.status == 400, (body if isinstance(body, bytes) else body[:1])
        assert response.content_type == "application/problem+json"
    for huge in (b"[" + b" " * (2 * 1024 * 1024) + b"]", json.dumps([good] * 10_000).encode()):
        response = await gw.client.post(url, data=io.BytesIO(huge))
        assert response.status == 413
    assert (await record(gw, message_id))["status"] == "sent"
    assert await metric(gw, "aliyun", "invalid") == len(bodies)
    unknown = await gw.client.post(url, json=[{**good, "new_field": 1}])
    assert unknown.status == 200  # a field Aliyun adds one day costs nothing
    assert (await record(gw, message_id))["status"] == "delivered"


async def test_hostile_huawei_pushes_are_logged_and_answered_200(
        receiving: MakeReceiving, caplog: pytest.LogCaptureFixture) -> None:
    gw = await receiving(providers=[provider("huawei")])
    url = f"/receipts/huawei/{TOKEN}"
    with caplog.at_level(logging.WARNING, logger="gateway.receipts"):
        for data in (b"%%%", b"status=DELIVRD", b"smsMsgId=1", b"\xff\xfe",
                     b"smsMsgId=1&status=DELIVRD&updateTime=3000-01-01T00%3A00%3A00Z",
                     b"smsMsgId=1&smsMsgId=2&status=DELIVRD", b"&".join([b"a=1"] * 5000)):
            response = await gw.client.post(
                url, data=data, headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert response.status == 200 and await response.read() == b""
    assert caplog.text.count("huawei receipt push ignored") == 7
    plain = await gw.client.post(url, data=b"smsMsgId=nobody&status=DELIVRD",
                                 headers={"Content-Type": "text/plain"})
    assert plain.status == 200  # no JSON content-type rule here: Huawei posts forms
    assert await metric(gw, "huawei", "parked") == 1  # unknown message: kept for an hour


async def test_receipts_off_without_a_token(make_gateway: Any, store_url: str) -> None:
    gw = await make_gateway(build_config(storage={"url": store_url}))
    response = await gw.client.post("/receipts/aliyun/anything", json=[])
    assert response.status == 404
    assert NUMBER  # the shared test number is what sends use


async def test_a_delivery_is_announced_to_the_callback_listeners(
        receiving: MakeReceiving) -> None:
    """A message with a callback_url (the outbox's) is announced again when a receipt moves
    it; the status callbacks listen on Gateway.listeners."""
    gw = await receiving()
    heard: list[tuple[str, str]] = []

    async def listener(message_id: str, url: str) -> None:
        heard.append((message_id, url))

    gw.gateway.listeners.append(listener)
    store = gw.gateway.store
    await store.records.create(NewMessage("cb-1", "app", "verify_code", [NUMBER],
                                          callback_url="https://hooks.example.com/sms"))
    await store.records.finish("cb-1", "sent", provider="aliyun", provider_message_id="b-1",
                               recipient_ids={NUMBER: "b-1"})
    report = [{"phone_number": "13800138000", "success": True, "err_code": "DELIVERED",
               "report_time": BEIJING_NOW, "biz_id": "b-1", "out_id": "cb-1"}]
    assert (await gw.client.post(f"/receipts/aliyun/{TOKEN}", json=report)).status == 200
    assert heard == [("cb-1", "https://hooks.example.com/sms")]
    assert (await gw.client.post(f"/receipts/aliyun/{TOKEN}", json=report)).status == 200
    assert len(heard) == 1  # a duplicate moves nothing: nothing to announce


async def test_a_large_huawei_batch_keeps_every_recipients_id(receiving: MakeReceiving) -> None:
    """Twenty smsMsgIds do not fit the message's one provider_message_id column: each
    recipient keeps its own, the record still finishes, and every receipt finds its number."""
    gw = await receiving(providers=[provider("huawei")], server={"max_recipients": 20})
    to = [f"+86138001380{i:02d}" for i in range(20)]
    response = await gw.send(to=to)
    assert response.status == 200
    found = await settled(gw, (await response.json())["id"])
    assert found["status"] == "delivered" and len(found["deliveries"]) == 20


async def test_an_aliyun_push_the_gateway_could_not_take_is_pushed_again(
        receiving: MakeReceiving, monkeypatch: pytest.MonkeyPatch) -> None:
    # The store away for a moment: the push is answered 503, and Aliyun tries again after 1, 5
    # and 10 minutes (the emulator: 1, 5, 10 times its receipt delay).
    gw = await receiving()
    store = gw.gateway.store
    real = store.receipts.apply
    calls = 0

    async def away_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreUnavailableError("the store cannot be written: connection is closed")
        return await real(*args, **kwargs)

    monkeypatch.setattr(store.receipts, "apply", away_once)
    message_id = await sent(gw)
    found = await settled(gw, message_id)
    assert found["status"] == "delivered" and calls == 2
    counters = gw.emulators["aliyun"].state.counters
    await until(lambda: counters["receipts"] == 1)  # counted once the emulator read the answer
    assert counters["receipt_failures"] == 1
