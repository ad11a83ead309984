"""API keys with names and rights (send, read, read_all, read_numbers, admin), through HTTP
on each store engine: 401 for no or a wrong key, 403 problem+json for a key without the right."""

from __future__ import annotations

import hashlib
from typing import Any

from conftest import NUMBER, Harness, MakeGateway, build_config
from gateway.keys import gateway_key

PLAIN = "k-plain"
READER: dict[str, Any] = {"name": "reader", "key": "k-read", "rights": ["read"]}
OPS: dict[str, Any] = {"name": "ops", "key": "k-ops",
       "rights": ["send", "read", "read_all", "read_numbers", "admin"]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def gateway(make_gateway: MakeGateway, store_url: str, *keys: Any) -> Harness:
    return await make_gateway(build_config(server={"api_keys": list(keys)},
                                           storage={"url": store_url}))


def sent(gw: Harness) -> int:
    return sum(len(e.state.accepted) for e in gw.emulators.values())


async def test_no_or_a_wrong_key_is_401_and_a_missing_right_403(
        make_gateway: MakeGateway, store_url: str) -> None:
    gw = await gateway(make_gateway, store_url, PLAIN, READER, OPS)
    routes = (("POST", "/sms"), ("GET", "/sms"), ("GET", "/sms/x"),
              ("POST", "/admin/providers/aliyun/open"), ("GET", "/_emulator"))
    for headers in ({}, bearer("k-wrong")):
        for method, path in routes:
            answer = await gw.client.request(method, path, json={}, headers=headers)
            assert answer.status == 401, (method, path)
    for key, method, path in ((READER["key"], "POST", "/sms"),
                              (PLAIN, "POST", "/admin/providers/aliyun/open"),
                              (PLAIN, "GET", "/_emulator"),
                              (READER["key"], "POST", "/_emulator/aliyun")):
        answer = await gw.client.request(method, path, json={"mode": "down"},
                                         headers=bearer(key))
        assert answer.status == 403, (key, method, path)
        assert answer.content_type == "application/problem+json"
        assert (await answer.json())["type"].endswith(":forbidden")
    refused = await gw.send(headers=bearer(READER["key"]))
    assert refused.status == 403 and sent(gw) == 0  # nothing sent without `send`
    assert gw.state("aliyun") == "closed"  # nor forced open
    assert (await gw.client.get("/sms", headers=bearer(READER["key"]))).status == 200
    opened = await gw.client.post("/admin/providers/aliyun/open", json={},
                                  headers=bearer(OPS["key"]))
    assert opened.status == 200
    assert (await gw.client.get("/_emulator", headers=bearer(OPS["key"]))).status == 200


async def test_read_all_and_read_numbers(make_gateway: MakeGateway, store_url: str) -> None:
    gw = await gateway(make_gateway, store_url, PLAIN, READER, OPS)
    answer = await gw.send(headers=bearer(PLAIN))
    body = await answer.json()
    assert answer.status == 200 and NUMBER in str(body)  # its own numbers, in E.164
    mine = body["id"]
    own = await (await gw.client.get(f"/sms/{mine}", headers=bearer(PLAIN))).json()
    assert own["to"] != [NUMBER] and NUMBER not in str(own)  # masked without read_numbers
    listed = await (await gw.client.get("/sms", headers=bearer(PLAIN))).json()
    assert [r["id"] for r in listed["items"]] == [mine] and NUMBER not in str(listed)
    # `read` without `read_all`: another key's messages do not exist for it
    assert (await gw.client.get(f"/sms/{mine}", headers=bearer(READER["key"]))).status == 404
    page = await (await gw.client.get("/sms", headers=bearer(READER["key"]))).json()
    assert page["items"] == []
    # read_all + read_numbers: everyone's, numbers in full
    full = await (await gw.client.get(f"/sms/{mine}", headers=bearer(OPS["key"]))).json()
    assert full["to"] == [NUMBER]
    everyone = await (await gw.client.get("/sms", headers=bearer(OPS["key"]))).json()
    assert [r["to"] for r in everyone["items"]] == [[NUMBER]]


async def test_a_named_key_is_recorded_by_its_name(make_gateway: MakeGateway,
                                                   store_url: str) -> None:
    # Two keys under one name (a rotation): each reads what the other sent.
    old: dict[str, Any] = {"name": "billing", "key": "k-old"}
    new: dict[str, Any] = {"name": "billing", "key": "k-new"}
    gw = await gateway(make_gateway, store_url, old, new, PLAIN)
    mine = (await (await gw.send(headers=bearer("k-old"))).json())["id"]
    assert (await gw.client.get(f"/sms/{mine}", headers=bearer("k-new"))).status == 200
    assert (await gw.client.get(f"/sms/{mine}", headers=bearer(PLAIN))).status == 404
    # a named key without `rights` has a plain key's: send and read, no admin
    admin = await gw.client.post("/admin/providers/aliyun/open", json={},
                                 headers=bearer("k-new"))
    assert admin.status == 403


async def test_with_auth_off_every_right_but_read_numbers(make_gateway: MakeGateway,
                                                          store_url: str) -> None:
    gw = await gateway(make_gateway, store_url)
    mine = (await (await gw.send()).json())["id"]
    record = await (await gw.client.get(f"/sms/{mine}")).json()
    assert record["id"] == mine and NUMBER not in str(record)
    listed = await (await gw.client.get("/sms")).json()
    assert [r["id"] for r in listed["items"]] == [mine] and NUMBER not in str(listed)
    assert (await gw.client.post("/admin/providers/aliyun/open", json={})).status == 200


async def test_callers_are_recorded_by_name_or_the_same_key_hash_as_before(
        make_gateway: MakeGateway, store_url: str) -> None:
    gw = await gateway(make_gateway, store_url, PLAIN, OPS)
    store = gw.client.app[gateway_key].store
    plain = (await (await gw.send(headers=bearer(PLAIN))).json())["id"]
    named = (await (await gw.send(headers=bearer(OPS["key"]))).json())["id"]
    # existing records of a plain key stay its own: the id is the one used before rights
    old_id = "key-" + hashlib.sha256(PLAIN.encode()).hexdigest()[:16]
    records = [await store.records.get(i) for i in (plain, named)]
    assert [r.caller if r else None for r in records] == [old_id, "ops"]
