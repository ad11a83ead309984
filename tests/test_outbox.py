"""Async sending through HTTP (SPEC §8): 202 queued, drained by the outbox, retried with
backoff, held while every provider is open, expired, rejected, unknown, idempotent."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from conftest import NUMBER, FakeClock, Harness, MakeGateway, build_config
from gateway.store import FINAL, NewMessage, open_store


async def queue(h: Harness, template: str = "notice", **extra: Any) -> dict[str, Any]:
    """Send one async message (``extra``: more body fields); its 202 body."""
    params = {"code": "1234"} if template == "verify_code" else {"name": "Li", "time": "9:00"}
    response = await h.client.post("/sms", json={"to": NUMBER, "template": template,
                                                 "params": params, "mode": "async", **extra})
    assert response.status == 202, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def record(h: Harness, message_id: str) -> dict[str, Any]:
    response = await h.client.get(f"/sms/{message_id}")
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def settled(h: Harness, message_id: str, within: float = 5.0) -> dict[str, Any]:
    """The record once its sending is over (the outbox runs on its own tasks)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        found = await record(h, message_id)
        if found["status"] in FINAL or loop.time() > deadline:
            return found
        await asyncio.sleep(0.02)


async def tried(h: Harness, message_id: str, attempts: int, within: float = 5.0) -> None:
    """Wait until ``attempts`` provider attempts of the message have finished, and it is
    back in the queue."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        found = await record(h, message_id)
        done = [a for a in found["attempts"] if a["outcome"] != "in_flight"]
        if len(done) >= attempts and found["status"] == "queued":
            return
        assert loop.time() < deadline, found
        await asyncio.sleep(0.02)


async def test_async_answers_202_queued_and_the_outbox_sends_it(make_gateway: MakeGateway) -> None:
    h = await make_gateway()
    body = await queue(h)
    assert body["status"] == "queued" and body["mode"] == "async" and body["to"] == [NUMBER]
    done = await settled(h, body["id"])
    assert done["status"] == "sent" and done["provider"] == "aliyun"
    assert h.accepted("aliyun", body["id"]) == 1
    assert done["mode"] == "async" and done["next_attempt_at"] is None
    assert "params" not in done  # erased once final, as for sync sends


async def test_a_template_can_make_every_send_async(make_gateway: MakeGateway) -> None:
    text = build_config().replace("notice: {params: [name, time]}",
                                  "notice: {params: [name, time], mode: async, ttl: 10m}")
    h = await make_gateway(text)
    response = await h.send("notice", params={"name": "Li", "time": "9:00"})
    assert response.status == 202
    body = await response.json()
    assert body["status"] == "queued"
    assert 599 < body["expires_at"] - (await record(h, body["id"]))["created_at"] <= 600
    assert (await settled(h, body["id"]))["status"] == "sent"
    # the request's mode wins over the template's
    response = await h.client.post("/sms", json={
        "to": NUMBER, "template": "notice", "params": {"name": "Li", "time": "9:00"},
        "mode": "sync"})
    assert response.status == 200


async def test_bad_mode_or_ttl_is_a_422_naming_the_field(gw: Harness) -> None:
    base: dict[str, Any] = {"to": NUMBER, "template": "verify_code", "params": {"code": "1"}}
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"mode": "later"}, "mode"), ({"mode": 5}, "mode"), ({"mode": None}, None),
        ({"mode": "async", "ttl": "forever"}, "ttl"), ({"mode": "async", "ttl": "73h"}, "ttl"),
        ({"mode": "async", "ttl": 0}, "ttl"), ({"mode": "async", "ttl": True}, "ttl"),
        ({"mode": "async", "ttl": [1]}, "ttl"), ({"mode": "async", "ttl": 1e400}, "ttl"),
        ({"mode": "async", "ttl": -5}, "ttl"), ({"mode": "async", "ttl": "72h"}, None)]
    for extra, field in cases:
        response = await gw.client.post("/sms", json={**base, **extra})
        if field is None:
            assert response.status in (200, 202), extra
            continue
        assert response.status == 422, extra
        problem = await response.json()
        assert [e["field"] for e in problem["errors"]] == [field], problem


async def test_failures_are_retried_with_exponential_backoff(make_gateway: MakeGateway) -> None:
    wall = FakeClock(1_800_000_000.0)
    patient = {"consecutive_failures": 10, "minimum_calls": 20}  # breakers stay closed
    h = await make_gateway(build_config(defaults={"breaker": patient}), wall_clock=wall)
    h.gateway.outbox.rand = lambda: 1.0  # the full jitter at its top: 1 s, 2 s, 4 s
    await h.mode("aliyun", "down")
    await h.mode("huawei", "down")
    body = await queue(h)
    waits = []
    for tries in (1, 2, 3):
        await tried(h, body["id"], 2 * tries)
        found = await record(h, body["id"])
        waits.append(round(found["next_attempt_at"] - wall.now, 3))
        wall.advance(waits[-1])
        h.gateway.outbox.wake()
    assert waits == [1.0, 2.0, 4.0]
    await h.mode("aliyun", "ok")
    done = await settled(h, body["id"])
    assert done["status"] == "sent"
    assert [a["outcome"] for a in done["attempts"]] == ["failed", "failed"] * 3 + ["accepted"]
    assert h.accepted("aliyun", body["id"]) == 1


async def test_while_every_provider_is_open_it_waits_without_trying(
        make_gateway: MakeGateway) -> None:
    wall, mono = FakeClock(1_800_000_000.0), FakeClock()
    h = await make_gateway(wall_clock=wall, clock=mono)
    for name in ("aliyun", "huawei"):  # three failures open each breaker (build_config)
        await h.mode(name, "down")
    for _ in range(3):
        response = await h.send()
        assert response.status == 502
    assert h.state("aliyun") == h.state("huawei") == "open"
    body = await queue(h)
    await tried(h, body["id"], 0)
    found = await record(h, body["id"])
    assert [a["outcome"] for a in found["attempts"]] == []  # skipped ones are not written
    wait = found["next_attempt_at"] - wall.now
    assert 30.0 <= wait <= 30 * 1.2 + 1.0  # open_for plus its jitter, plus a spread
    await h.gateway.outbox.tend()
    status = await (await h.client.get("/status")).json()
    assert status["outbox"]["depth"] == 1 and status["outbox"]["waiting_for_providers"] == 1
    metrics = await (await h.client.get("/metrics")).text()
    assert "sms_outbox_depth 1.0" in metrics
    requests = h.emulators["aliyun"].state.counters["requests"]
    h.gateway.outbox.wake()  # woken early: still not due, nothing is sent
    await asyncio.sleep(0.1)
    assert h.emulators["aliyun"].state.counters["requests"] == requests
    for name in ("aliyun", "huawei"):
        await h.mode(name, "ok")
    wall.advance(wait)
    mono.advance(wait)
    h.gateway.outbox.wake()
    assert (await settled(h, body["id"]))["status"] == "sent"


async def test_past_its_ttl_it_expires(make_gateway: MakeGateway) -> None:
    wall = FakeClock(1_800_000_000.0)
    h = await make_gateway(wall_clock=wall)
    h.gateway.outbox.rand = lambda: 1.0
    await h.mode("aliyun", "down")
    await h.mode("huawei", "down")
    response = await h.client.post("/sms", json={
        "to": NUMBER, "template": "notice", "params": {"name": "Li", "time": "9:00"},
        "mode": "async", "ttl": "10s"})
    body = await response.json()
    assert body["expires_at"] == wall.now + 10
    await tried(h, body["id"], 2)
    wall.advance(10)
    await h.gateway.outbox.tend()  # the pass that runs every 2 s
    done = await record(h, body["id"])
    assert done["status"] == "expired" and done["error"]
    metrics = await (await h.client.get("/metrics")).text()
    assert 'sms_outbox_sends_total{result="expired"} 1.0' in metrics


async def test_a_caller_fault_is_rejected_at_once(gw: Harness) -> None:
    await gw.mode("aliyun", "reject")
    body = await queue(gw)
    done = await settled(gw, body["id"])
    assert done["status"] == "rejected" and done["http_status"] == 422
    assert [a["provider"] for a in done["attempts"]] == ["aliyun"]  # no failover


async def test_an_unknown_outcome_is_not_resent(gw: Harness) -> None:
    await gw.mode("aliyun", "hang")  # the attempt times out after the request left
    body = await queue(gw)  # notice: on_unknown stop
    done = await settled(gw, body["id"])
    assert done["status"] == "unknown"
    assert [a["outcome"] for a in done["attempts"]] == ["unknown"]
    assert gw.emulators["huawei"].state.counters["requests"] == 0


async def test_an_idempotency_key_replays_the_202(gw: Harness) -> None:
    body = {"to": NUMBER, "template": "notice", "params": {"name": "Li", "time": "9:00"},
            "mode": "async"}
    first = await gw.client.post("/sms", json=body, headers={"Idempotency-Key": "k1"})
    again = await gw.client.post("/sms", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status == again.status == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    one, two = await first.json(), await again.json()
    assert one == two
    assert (await settled(gw, one["id"]))["status"] == "sent"
    assert gw.accepted("aliyun", one["id"]) == 1
    other = await gw.client.post("/sms", json={**body, "ttl": "5m"},
                                 headers={"Idempotency-Key": "k1"})
    assert other.status == 409


async def test_sigterm_finishes_in_flight_sends_and_releases_the_rest(
        make_gateway: MakeGateway, tmp_path: Path) -> None:
    store = tmp_path / "outbox.db"
    text = build_config(server={"shutdown_timeout": "3s"},
                        storage={"url": f"sqlite:///{store}", "workers": 2})
    h = await make_gateway(text)
    await h.mode("aliyun", "latency", 400)  # under the 500 ms timeout
    ids = [(await queue(h))["id"] for _ in range(6)]
    requests = h.emulators["aliyun"].state.counters
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while requests["requests"] < 2:
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    started = loop.time()
    await h.client.close()  # the app's shutdown, as on SIGTERM
    assert loop.time() - started < 3
    assert requests["requests"] == 2  # nothing new was claimed
    left = await open_store(f"sqlite:///{store}")  # the store as the process left it
    try:
        records = [await left.records.get(i) for i in ids]
        leases = await left.database.read(lambda conn: conn.exec_driver_sql(
            "SELECT count(*) FROM messages WHERE lease_owner IS NOT NULL").scalar())
    finally:
        await left.close()
    assert [r.status for r in records if r].count("sent") == 2
    waiting = [r for r in records if r and r.status == "queued"]
    assert len(waiting) == 4 and all(r.next_attempt_at is not None for r in waiting)
    assert leases == 0
    third = await make_gateway(text)  # a new start sends the rest, each once
    for message_id in ids:
        assert (await settled(third, message_id))["status"] == "sent"
        assert third.accepted("aliyun", message_id) == 1


async def crashed(h: Harness, message_id: str, template: str, wall: FakeClock) -> None:
    """A message a dead process claimed and started an attempt of: its lease runs out."""
    params = {"code": "1"} if template == "verify_code" else {"name": "Li", "time": "9:00"}
    store = h.gateway.store
    await store.records.create(NewMessage(message_id, "app", template, [NUMBER], params,
                                          mode="async", expires_at=wall.now + 3600))
    await h.gateway.outbox.stop(0)  # this test plays the dead process itself
    assert [c.id for c in await store.outbox.claim("dead", 30, 1)] == [message_id]
    await store.records.attempt_started(message_id, "aliyun")
    wall.advance(31)


async def test_after_a_crash_mid_attempt_it_becomes_unknown_not_resent(
        make_gateway: MakeGateway) -> None:
    wall = FakeClock(1_800_000_000.0)
    h = await make_gateway(wall_clock=wall)
    await crashed(h, "m-crashed", "notice", wall)
    [claimed] = await h.gateway.store.outbox.claim("alive", 30, 1)
    assert claimed.unfinished == 1
    h.gateway.outbox.start(h.gateway.store, lambda: h.gateway.runtime.snapshot,
                           h.gateway.runtime.config.storage, h.gateway.announce)
    wall.advance(31)
    done = await settled(h, "m-crashed")
    assert done["status"] == "unknown"
    assert [a["outcome"] for a in done["attempts"]] == ["unknown"]
    assert h.emulators["aliyun"].state.counters["requests"] == 0


async def test_after_a_crash_mid_attempt_failover_templates_are_sent_again(
        make_gateway: MakeGateway) -> None:
    wall = FakeClock(1_800_000_000.0)
    h = await make_gateway(wall_clock=wall)
    await crashed(h, "m-otp", "verify_code", wall)  # on_unknown: failover
    h.gateway.outbox.start(h.gateway.store, lambda: h.gateway.runtime.snapshot,
                           h.gateway.runtime.config.storage, h.gateway.announce)
    done = await settled(h, "m-otp")
    assert done["status"] == "sent"
    assert [a["outcome"] for a in done["attempts"]] == ["unknown", "accepted"]
    assert h.accepted("aliyun", "m-otp") == 1


async def test_the_dashboard_shows_the_outbox(make_gateway: MakeGateway) -> None:
    wall = FakeClock(1_800_000_000.0)
    h = await make_gateway(wall_clock=wall)
    await h.gateway.outbox.stop(0)  # nothing drains: the message stays queued
    await queue(h)
    wall.advance(75)
    await h.gateway.outbox.tend()
    page = await (await h.client.get("/")).text()
    tile = page[page.index('data-testid="outbox"'):]
    assert "1 <small>queued</small>" in tile and "oldest 1m 15s" in tile
    status = await (await h.client.get("/status")).json()
    assert status["outbox"]["depth"] == 1 and status["outbox"]["oldest_seconds"] == 75.0
    metrics = await (await h.client.get("/metrics")).text()
    assert "sms_outbox_oldest_seconds 75.0" in metrics
