"""``/openapi.json`` describes the records API (SPEC §7), and real answers match it."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from conftest import Harness, MakeGateway, build_config
from gateway.store import STATUSES


def problems(value: Any, schema: dict[str, Any], doc: dict[str, Any]) -> list[str]:
    validator = Draft202012Validator({**schema, "components": doc["components"]})
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in validator.iter_errors(value)]


async def document(gw: Harness) -> dict[str, Any]:
    response = await gw.client.get("/openapi.json")
    assert response.status == 200
    doc: dict[str, Any] = await response.json()
    return doc


async def test_get_sms_filters_cursor_and_limit_are_described(gw: Harness) -> None:
    doc = await document(gw)
    listing = doc["paths"]["/sms"]["get"]
    params = {p["name"]: p for p in listing["parameters"]}
    assert set(params) == {"status", "template", "to", "since", "until", "limit", "cursor"}
    assert all(p["in"] == "query" and not p["required"] for p in params.values())
    assert set(params["status"]["schema"]["enum"]) == STATUSES
    assert (params["limit"]["schema"]["minimum"], params["limit"]["schema"]["maximum"]) == (1, 500)
    assert "opaque" in params["cursor"]["description"]
    assert {"200", "400", "401", "403", "503"} <= set(listing["responses"])
    page = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert page == {"$ref": "#/components/schemas/RecordPage"}
    one = doc["paths"]["/sms/{id}"]["get"]
    assert one["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Record"}
    assert "text/html" in one["responses"]["200"]["content"]
    assert {"404", "401", "403"} <= set(one["responses"])


async def test_real_answers_match_the_documented_schemas(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(build_config(storage={"url": "memory", "keep_params": True}))
    doc = await document(gw)
    sent = await (await gw.send()).json()
    await gw.mode("aliyun", "fail")
    await gw.send()  # fails over: two attempts
    await gw.mode("aliyun", "reject")
    assert (await gw.send()).status == 422

    listing = doc["paths"]["/sms"]["get"]["responses"]
    response = await gw.client.get("/sms?limit=2")
    page = await response.json()
    schema = listing["200"]["content"]["application/json"]["schema"]
    assert response.status == 200 and problems(page, schema, doc) == []
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = await (await gw.client.get(f"/sms?limit=2&cursor={page['next_cursor']}")).json()
    assert problems(rest, schema, doc) == [] and rest["next_cursor"] is None
    assert rest["items"][0]["id"] == sent["id"] and "params" in rest["items"][0]

    one = doc["paths"]["/sms/{id}"]["get"]["responses"]
    record = await (await gw.client.get(f"/sms/{sent['id']}")).json()
    assert problems(record, one["200"]["content"]["application/json"]["schema"], doc) == []

    bad = await gw.client.get("/sms?limit=501")
    assert str(bad.status) in listing and bad.content_type == "application/problem+json"
    assert (await bad.json())["field"] == "limit"
    missing = await gw.client.get("/sms/nope")
    assert str(missing.status) in one
