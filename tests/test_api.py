"""POST /sms and friends: every status of SPEC section 3, through HTTP, against the emulators."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from conftest import NUMBER, TEST_CONFIG, Harness, MakeGateway


async def test_send_goes_to_the_first_provider(gw: Harness) -> None:
    response = await gw.send(to=[NUMBER, "13900139000"])
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "sent"
    assert body["provider"] == "aliyun"
    assert body["message"] == "send"
    assert body["to"] == [NUMBER, "+8613900139000"]
    assert body["provider_message_id"]
    assert [a["provider"] for a in body["attempts"]] == ["aliyun"]
    assert body["attempts"][0]["outcome"] == "accepted"
    assert gw.accepted("aliyun", body["id"]) == 1  # our id went out as OutId, exactly once
    assert gw.emulators["huawei"].state.counters["requests"] == 0


async def test_seed_path_and_field_names(gw: Harness) -> None:
    response = await gw.client.post("/api/sms", json={
        "receivers": "+8613800138000, 13900139000", "template": "verify_code",
        "params": {"code": 1234}})
    assert response.status == 200
    body = await response.json()
    assert len(body["to"]) == 2
    message = gw.emulators["aliyun"].state.messages[-1]
    assert message["params"] == {"code": "1234"}


async def test_duplicate_numbers_are_sent_once(gw: Harness) -> None:
    response = await gw.send(to=[NUMBER, "13800138000", "+86 138 0013 8000"])
    assert (await response.json())["to"] == [NUMBER]


async def test_400_for_bodies_that_are_not_a_send(gw: Harness) -> None:
    cases = [b"{not json", b"[1, 2]", json.dumps({"to": 5, "template": "verify_code"}).encode(),
             json.dumps({"to": [NUMBER], "template": "verify_code", "cc": "x"}).encode(),
             json.dumps({"to": [NUMBER], "template": 7}).encode(),
             json.dumps({"to": [NUMBER], "template": "verify_code", "params": [1]}).encode()]
    for raw in cases:
        response = await gw.client.post("/sms", data=raw,
                                        headers={"Content-Type": "application/json"})
        assert response.status == 400, raw
        assert response.content_type == "application/problem+json"
        body = await response.json()
        assert set(body) >= {"type", "title", "status", "detail"}


async def test_415_for_a_body_that_is_not_json(gw: Harness) -> None:
    response = await gw.client.post("/sms", data="to=1", headers={"Content-Type": "text/plain"})
    assert response.status == 415
    assert (await response.json())["status"] == 415


async def test_413_for_big_bodies_and_too_many_numbers(gw: Harness) -> None:
    big = json.dumps({"to": [NUMBER], "template": "verify_code",
                      "params": {"code": "x" * 70_000}})
    response = await gw.client.post("/sms", data=big, headers={"Content-Type": "application/json"})
    assert response.status == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit must still hold
        for _ in range(100):
            yield b" " * 1024

    response = await gw.client.post("/sms", data=chunks(),
                                    headers={"Content-Type": "application/json"})
    assert response.status == 413
    response = await gw.send(to=[f"+861380013800{i}" for i in range(6)])
    assert response.status == 413


async def test_422_lists_every_problem(gw: Harness) -> None:
    response = await gw.send(template="verify_code", to=[NUMBER, "12", "+1abc"],
                             params={"code": "1", "extra": "2"})
    assert response.status == 422
    body = await response.json()
    fields = {e["field"] for e in body["errors"]}
    assert fields == {"to[1]", "to[2]", "params.extra"}
    response = await gw.send(template="nope")
    assert response.status == 422
    assert (await response.json())["errors"][0]["field"] == "template"
    response = await gw.send(template="notice", params={"name": "A"})
    assert {e["field"] for e in (await response.json())["errors"]} == {"params.time"}
    assert gw.emulators["aliyun"].state.counters["requests"] == 0


async def test_header_injection_in_a_number_is_rejected(gw: Harness) -> None:
    response = await gw.send(to=["13800138000\r\nX-Injected: 1"])
    assert response.status == 422


async def test_401_when_api_keys_are_configured(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(TEST_CONFIG.replace("api_keys: []", "api_keys: [k-one, k-two]"))
    missing = await gw.send()
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="sms-gateway"'
    assert (await gw.send(headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await gw.send(headers={"Authorization": "Bearer k-two"})).status == 200
    assert (await gw.send(headers={"X-API-Key": "k-one"})).status == 200
    admin = await gw.client.post("/admin/providers/aliyun/open", json={})
    assert admin.status == 401
    assert (await gw.client.get("/healthz")).status == 200  # machines' routes stay open


async def test_idempotency_key_replays_and_conflicts(gw: Harness) -> None:
    first = await gw.send(headers={"Idempotency-Key": "abc"})
    again = await gw.send(headers={"Idempotency-Key": "abc"})
    assert first.status == again.status == 200
    assert (await first.json())["id"] == (await again.json())["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert gw.emulators["aliyun"].state.counters["accepted"] == 1
    other = await gw.send(params={"code": "999999"}, headers={"Idempotency-Key": "abc"})
    assert other.status == 409
    invalid = await gw.send(to="not a number", headers={"Idempotency-Key": "abc"})
    assert invalid.status == 409  # the key is taken, whatever the new body is
    assert gw.emulators["aliyun"].state.counters["requests"] == 1


async def test_a_body_that_fails_validation_leaves_its_key_free(gw: Harness) -> None:
    invalid = await gw.send(to="not a number", headers={"Idempotency-Key": "fresh"})
    assert invalid.status == 422
    valid = await gw.send(headers={"Idempotency-Key": "fresh"})
    assert valid.status == 200  # nothing was sent the first time, so nothing is replayed
    assert "Idempotent-Replayed" not in valid.headers


async def test_idempotency_conflict_while_in_flight(gw: Harness) -> None:
    await gw.mode("aliyun", "latency", 300)
    first = asyncio.create_task(gw.send(headers={"Idempotency-Key": "slow"}))
    async with asyncio.timeout(5):
        while gw.emulators["aliyun"].state.counters["requests"] == 0:  # the first is on the wire
            await asyncio.sleep(0.005)
    second = await gw.send(headers={"Idempotency-Key": "slow"})
    assert second.status == 409
    assert (await first).status == 200


async def test_422_when_the_provider_rejects_without_failover(gw: Harness) -> None:
    await gw.mode("aliyun", "reject")
    response = await gw.send()
    assert response.status == 422
    body = await response.json()
    assert [a["outcome"] for a in body["attempts"]] == ["rejected"]
    assert "isv.MOBILE_NUMBER_ILLEGAL" in body["detail"]
    assert gw.emulators["huawei"].state.counters["requests"] == 0
    assert gw.state("aliyun") == "closed"  # a caller fault never counts against the provider


async def test_429_per_recipient_limit_without_failover(gw: Harness) -> None:
    await gw.mode("aliyun", "limit")
    response = await gw.send()
    assert response.status == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert gw.emulators["huawei"].state.counters["requests"] == 0
    assert gw.state("aliyun") == "closed"


async def test_502_when_every_provider_fails(gw: Harness) -> None:
    await gw.mode("aliyun", "down")
    await gw.mode("huawei", "down")
    response = await gw.send()
    assert response.status == 502
    body = await response.json()
    assert body["id"]
    assert [(a["provider"], a["outcome"]) for a in body["attempts"]] == [
        ("aliyun", "failed"), ("huawei", "failed")]


async def test_503_when_every_provider_is_open(gw: Harness) -> None:
    for name in ("aliyun", "huawei"):
        assert (await gw.client.post(f"/admin/providers/{name}/open", json={})).status == 200
    response = await gw.send()
    assert response.status == 503
    assert int(response.headers["Retry-After"]) >= 1
    body = await response.json()
    assert [a["outcome"] for a in body["attempts"]] == ["skipped", "skipped"]
    assert (await gw.client.get("/readyz")).status == 503
    assert (await gw.client.post("/admin/providers/aliyun/close", json={})).status == 200
    assert (await gw.client.get("/readyz")).status == 200
    assert (await gw.send()).status == 200


async def test_202_unknown_outcome_stops_by_default(gw: Harness) -> None:
    await gw.mode("aliyun", "hang")
    response = await gw.send(template="notice", params={"name": "Ann", "time": "9:00"})
    assert response.status == 202
    body = await response.json()
    assert body["status"] == "unknown"
    assert [a["outcome"] for a in body["attempts"]] == ["unknown"]
    assert gw.emulators["huawei"].state.counters["requests"] == 0  # never risk a duplicate


async def test_unknown_fails_over_when_the_template_says_so(gw: Harness) -> None:
    await gw.mode("aliyun", "fail")  # isp.SYSTEM_ERROR: maybe sent
    response = await gw.send(template="verify_code")
    assert response.status == 200
    body = await response.json()
    assert body["provider"] == "huawei"
    assert [a["outcome"] for a in body["attempts"]] == ["unknown", "accepted"]
    assert gw.accepted("huawei", body["id"]) == 1


async def test_get_sms_record_masks_numbers(gw: Harness) -> None:
    body = await (await gw.send()).json()
    response = await gw.client.get(f"/sms/{body['id']}")
    assert response.status == 200
    record = await response.json()
    assert record["status"] == "sent"
    assert record["to"] == ["+86138******00"]
    assert NUMBER not in await response.text()
    assert (await gw.client.get("/sms/unknown-id")).status == 404


async def test_unknown_routes_are_problems(gw: Harness) -> None:
    response = await gw.client.get("/nope")
    assert response.status == 404
    assert response.content_type == "application/problem+json"
    response = await gw.client.delete("/sms")
    assert response.status == 405
    for missing in ("/static/nope.css", "/static/..%2Fconfig.yaml", "/static/"):
        response = await gw.client.get(missing)
        assert response.status == 404, missing
        assert response.content_type == "application/problem+json", missing
    shipped = await gw.client.get("/static/dashboard.css")
    assert shipped.status == 200 and shipped.content_type == "text/css"
