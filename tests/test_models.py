"""The POST /sms body as pydantic models (issue 9 item 6): the same answers as the hand-written
checks gave, and /openapi.json's request schema generated from the model the body is checked by."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from conftest import NUMBER, Harness
from gateway.models import SendBody

OK_PARAMS = {"code": "1"}
# body -> (status, detail, errors): the first problem a person would fix, in field order.
CASES: list[tuple[Any, int, str, list[dict[str, str]] | None]] = [
    ([NUMBER], 400, "the body must be a JSON object", None),
    ({"to": NUMBER, "x": 1, "y": 2, "template": "verify_code"}, 400, "unknown field(s): x, y",
     [{"field": "x", "message": "unknown field"}, {"field": "y", "message": "unknown field"}]),
    ({"to": 5, "receivers": NUMBER, "template": 1}, 400,
     "give the numbers as 'to' or as 'receivers', not both", None),
    ({"to": None, "template": "verify_code"}, 400, "'to' is required",
     [{"field": "to", "message": "is required"}]),
    ({"template": 7}, 400, "'to' is required", [{"field": "to", "message": "is required"}]),
    ({"receivers": [1], "template": 7}, 400,
     "'to' must be a list of phone numbers or one comma-separated string",
     [{"field": "to", "message": "must be a list of strings"}]),
    ({"to": " , ", "template": 7}, 400, "'to' has no numbers",
     [{"field": "to", "message": "is empty"}]),
    ({"to": [], "template": "verify_code"}, 400, "'to' has no numbers",
     [{"field": "to", "message": "is empty"}]),
    ({"to": NUMBER, "template": "", "params": 3}, 400, "'template' must be a non-empty string",
     [{"field": "template", "message": "must be a non-empty string"}]),
    ({"to": NUMBER, "template": "verify_code", "params": [1]}, 400,
     "'params' must be an object", [{"field": "params", "message": "not an object"}]),
    ({"to": NUMBER, "template": "verify_code", "params": {"code": "1", "b": True, "c": None}},
     400, "param 'b' must be a string or a number",
     [{"field": "params.b", "message": "must be a string or a number"}]),
    ({"to": NUMBER, "template": "verify_code", "params": {"\ud800": []}}, 400,
     "param '\\\\ud800' must be a string or a number",
     [{"field": "params.\\ud800", "message": "must be a string or a number"}]),
    ({"to": f"{NUMBER},12", "template": "\ud800", "params": {"c": float("nan")}}, 422,
     "the message cannot be sent as given; see 'errors'",
     [{"field": "params.c", "message": "must be a finite number"},
      {"field": "template", "message": "unknown template; known: notice, verify_code"},
      {"field": "to[1]", "message": "not a phone number: only digits, spaces, +, -, ., ( and ) "
                                    "are allowed"}]),
    ({"receivers": [NUMBER], "template": "verify_code", "params": {"code": 1, "x": "\udc80"}},
     422, "the message cannot be sent as given; see 'errors'",
     [{"field": "params.x", "message": "cannot be encoded as UTF-8 (a lone surrogate)"},
      {"field": "params.x", "message": "not a param of this template"}]),
]


@pytest.mark.parametrize(("body", "status", "detail", "errors"), CASES)
async def test_each_wrong_body_gets_todays_answer(
    gw: Harness, body: Any, status: int, detail: str, errors: list[dict[str, str]] | None,
) -> None:
    response = await gw.client.post("/sms", data=json.dumps(body).encode(),
                                    headers={"Content-Type": "application/json"})
    problem = json.loads(await response.read())
    assert (response.status, problem["detail"], problem.get("errors")) == (status, detail, errors)


@pytest.mark.parametrize("body", [
    {"to": NUMBER, "template": "verify_code", "params": {"code": 123456}},
    {"receivers": f" {NUMBER} , +8613900139000", "template": "verify_code",
     "params": {"code": "1"}},
    {"to": [NUMBER, NUMBER], "template": "notice", "params": {"name": "a", "time": 1.5}},
])
async def test_good_bodies_are_sent(gw: Harness, body: dict[str, Any]) -> None:
    response = await gw.client.post("/sms", json=body)
    assert response.status == 200, await response.text()


async def test_the_documented_request_is_the_model(gw: Harness) -> None:
    doc = await (await gw.client.get("/openapi.json")).json()
    variants = doc["components"]["schemas"]["SendRequest"]["oneOf"]
    fields = set(SendBody.model_fields)
    for variant in variants:
        assert set(variant["properties"]) == fields
        assert variant["additionalProperties"] is False
        assert variant["properties"]["template"]["const"] == variant["title"]
        assert variant["properties"]["template"]["title"] == "Template"  # pydantic's naming
    verify = next(v for v in variants if v["title"] == "verify_code")
    check = Draft202012Validator(verify)
    assert check.is_valid({"to": NUMBER, "template": "verify_code", "params": {"code": 1}})
    assert not check.is_valid({"to": NUMBER, "receivers": NUMBER, "template": "verify_code",
                               "params": {"code": 1}})
    assert not check.is_valid({"to": NUMBER, "template": "verify_code", "params": {}})
