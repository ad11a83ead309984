"""Hostile input on the public API: property-based over bodies, headers and content types.

Whatever arrives, the answer is a status from SPEC section 3 in JSON, never a 500, never a
traceback or an internal path. Oversize bodies are cut off at 64 KiB without being read whole;
unicode, emoji and long params go through to the providers intact; CR/LF in a number is a 422.
"""

from __future__ import annotations

import asyncio
import json
import string
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from conftest import NUMBER, TEST_CONFIG, Harness, MakeGateway
from gateway.config import MAX_BODY_BYTES

TABLE = frozenset({200, 202, 400, 401, 403, 409, 413, 415, 422, 429, 502, 503})
# Long enough that a generated field name echoed in an error cannot produce one by chance.
LEAKS = ("Traceback (most recent", 'File "/', "/work/", "site-packages", "/usr/lib/python",
         "/tmp/venv", "internal error")
HYPOTHESIS = settings(max_examples=60, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])

VALID_NUMBERS = ["+8613800138000", "13900139000", "+16502530000", "+44 20 7946 0958",
                 "(010) 8888 6666"]
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                    blacklist_characters="\x7f"), max_size=80)
JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.text(max_size=40)
                | st.floats(allow_nan=False, allow_infinity=False))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=5),
                           max_leaves=25)


async def check(response: Any) -> dict[str, Any] | list[Any]:
    """The invariants every answer keeps; returns the decoded JSON body."""
    text = await response.text()
    assert response.status in TABLE, (response.status, text)
    for leak in LEAKS:
        assert leak not in text, (leak, text)
    assert response.content_type in ("application/json", "application/problem+json")
    body = json.loads(text)
    if response.status >= 400:
        assert body["status"] == response.status
        assert {"type", "title", "detail"} <= set(body)
    return body  # type: ignore[no-any-return]


async def post(gw: Harness, data: bytes | str, content_type: str | None = "application/json",
               **headers: str) -> Any:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return await gw.client.post("/sms", data=data, headers=headers)


# -- bodies ----------------------------------------------------------------------------------

@HYPOTHESIS
@given(raw=st.binary(max_size=1024))
async def test_any_bytes_as_json(gw: Harness, raw: bytes) -> None:
    response = await post(gw, raw)
    await check(response)
    assert response.status in (400, 422, 200)


@HYPOTHESIS
@given(value=JSON_VALUES)
async def test_any_json_value(gw: Harness, value: Any) -> None:
    response = await post(gw, json.dumps(value))
    await check(response)
    assert response.status in (400, 413, 422, 200)


def _send_bodies() -> st.SearchStrategy[dict[str, Any]]:
    numbers = st.sampled_from(VALID_NUMBERS) | st.text(max_size=40)
    to = (st.lists(numbers, max_size=7) | numbers | JSON_VALUES)
    template = st.sampled_from(["verify_code", "notice", ""]) | JSON_VALUES
    param_value = st.text(max_size=50) | st.integers() | st.floats(allow_nan=False) | JSON_VALUES
    params = (st.dictionaries(st.sampled_from(["code", "name", "time"]) | st.text(max_size=8),
                              param_value, max_size=4) | JSON_VALUES)
    fields = {"to": to, "receivers": to, "template": template, "params": params,
              "cc": JSON_VALUES}
    return st.fixed_dictionaries({}, optional=fields)


@HYPOTHESIS
@given(body=_send_bodies())
async def test_send_shaped_bodies(gw: Harness, body: dict[str, Any]) -> None:
    response = await post(gw, json.dumps(body))
    answer = await check(response)
    assert response.status in (200, 400, 413, 422)
    if response.status == 200:
        assert isinstance(answer, dict)
        assert gw.accepted("aliyun", answer["id"]) == 1


@HYPOTHESIS
@given(number=st.text(max_size=30), form=st.sampled_from(["list", "string"]))
async def test_any_number_text(gw: Harness, number: str, form: str) -> None:
    to: Any = [number] if form == "list" else number
    response = await gw.send(to=to)
    await check(response)
    assert response.status in (200, 400, 422)
    if any(c in number for c in "\r\n\0\t:") or any(c.isalpha() for c in number):
        assert response.status in (400, 422)


FULLWIDTH = "".join(chr(0xFF10 + int(d)) for d in "13800138000")  # digits, but not ASCII ones


@pytest.mark.parametrize("number", [
    "13800138000\r\nX-Injected: 1", "13800138000\nBcc: x", "13800138000\n", "\n13800138000",
    "13800138000\r", "13800138000\x00", "+86138%0d%0a00138000", "13800138000\u2028",
    "13800138000,\r\nX: y", FULLWIDTH,
])
async def test_header_injection_in_numbers_is_a_422(gw: Harness, number: str) -> None:
    response = await gw.send(to=[number])
    body = await check(response)
    assert response.status == 422, body
    assert gw.emulators["aliyun"].state.counters["requests"] == 0


# -- headers and content types ---------------------------------------------------------------

@HYPOTHESIS
@given(content_type=HEADER_TEXT | st.sampled_from([
    "application/json; charset=utf-16", "application/problem+json", "application/x+json",
    "text/json", "application/json;;;", "application/json; charset=\"", "multipart/form-data",
    "application/x-www-form-urlencoded", "*/*", "application/JSON", ""]))
async def test_any_content_type(gw: Harness, content_type: str) -> None:
    body = json.dumps({"to": [NUMBER], "template": "verify_code", "params": {"code": "1"}})
    response = await post(gw, body, content_type=content_type)
    await check(response)
    assert response.status in (200, 400, 415)


@pytest.fixture
async def keyed(make_gateway: MakeGateway) -> Harness:
    return await make_gateway(TEST_CONFIG.replace("api_keys: []", "api_keys: [k-one, k-two]"))


@HYPOTHESIS
@given(authorization=HEADER_TEXT, api_key=HEADER_TEXT, idempotency=HEADER_TEXT)
async def test_any_auth_and_idempotency_headers(keyed: Harness, authorization: str,
                                                api_key: str, idempotency: str) -> None:
    headers = {"Authorization": authorization, "X-API-Key": api_key,
               "Idempotency-Key": idempotency}
    response = await keyed.send(headers=headers)
    await check(response)
    bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
    given_key = bearer if bearer is not None else api_key
    if given_key not in ("k-one", "k-two"):
        assert response.status == 401
    else:
        assert response.status in (200, 400, 409)


@HYPOTHESIS
@given(name=st.text(string.ascii_letters + string.digits + "-_%.~", min_size=1, max_size=30),
       action=st.text(string.ascii_letters + "-%", min_size=1, max_size=10))
async def test_other_routes_with_any_path(gw: Harness, name: str, action: str) -> None:
    for method, path in (("GET", f"/sms/{name}"), ("POST", f"/admin/providers/{name}/{action}"),
                         ("GET", f"/{name}"), ("DELETE", "/sms")):
        response = await gw.client.request(method, path)
        text = await response.text()
        assert response.status != 500
        for leak in LEAKS:
            assert leak not in text


# -- size limits -----------------------------------------------------------------------------

HEAD = (b"POST /sms HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\n")


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return status, json.loads(await reader.readexactly(length))


async def test_a_10mb_chunked_upload_is_cut_off_at_the_limit(gw: Harness) -> None:
    server = gw.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
    answer = asyncio.create_task(read_answer(reader))
    chunk, sent, started = b" " * 16384, 0, time.monotonic()
    try:
        while sent < 10 * 1024 * 1024 and not answer.done():
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
            sent += len(chunk)
            await asyncio.sleep(0.001)  # a client on a real network, not a memcpy
    except ConnectionError:
        pass  # the server may close on us: it has answered
    status, body = await asyncio.wait_for(answer, 5)
    writer.close()
    assert status == 413
    assert body["status"] == 413
    assert time.monotonic() - started < 2
    assert sent < 1024 * 1024  # answered after ~64 KiB, long before the 10 MB were sent


async def test_a_declared_10mb_body_is_refused_before_it_is_sent(gw: Harness) -> None:
    server = gw.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(HEAD + b"Content-Length: 10485760\r\n\r\n")
    await writer.drain()
    status, body = await asyncio.wait_for(read_answer(reader), 2)  # no body byte sent at all
    writer.close()
    assert status == 413
    assert str(MAX_BODY_BYTES) in body["detail"]


async def test_just_under_the_limit_is_read(gw: Harness) -> None:
    body = json.dumps({"to": [NUMBER], "template": "verify_code", "params": {"code": "1"}})
    padded = body[:-1] + " " * (MAX_BODY_BYTES - len(body)) + "}"
    assert len(padded) == MAX_BODY_BYTES
    assert (await post(gw, padded)).status == 200
    assert (await post(gw, padded + " ")).status == 413


async def test_deep_nesting_is_a_400(gw: Harness) -> None:
    response = await post(gw, "[" * 30_000 + "]" * 30_000)
    assert response.status in (400, 413)
    await check(response)
    response = await post(gw, "[" * 20_000)
    assert response.status == 400


# -- what must go through --------------------------------------------------------------------

UNICODE = {
    "cjk": "您的验证码是八八六六\uff0c五分钟内有效\u3002",
    "emoji": "😀🎉👍🏽👨‍👩‍👧‍👦🇨🇳",
    "mixed": "Zoë & Ōsaka; ñ 'quote' \"dq\" <b>&amp; %20 + = ? # / \\",
    "rtl": "\u202eRTL\u202c שלום مرحبا",
    "long ascii": "x" * 1000,
    "long mixed": ("ab验证😀" * 200)[:1000],
}


@pytest.mark.parametrize("provider", ["aliyun", "huawei"])
@pytest.mark.parametrize("kind", list(UNICODE))
async def test_unicode_params_reach_the_provider_intact(make_gateway: MakeGateway,
                                                        provider: str, kind: str) -> None:
    text = TEST_CONFIG if provider == "aliyun" else TEST_CONFIG.replace("priority: 2",
                                                                        "priority: 0")
    gw = await make_gateway(text)
    value = UNICODE[kind]
    response = await gw.send(template="notice", params={"name": value, "time": "9:00"})
    body = await check(response)
    assert response.status == 200, body
    assert isinstance(body, dict)
    assert body["provider"] == provider
    received = gw.emulators[provider].state.messages[-1]["params"]
    expected = {"name": value, "time": "9:00"} if provider == "aliyun" else [value, "9:00"]
    assert received == expected


async def test_unicode_params_through_the_sandbox(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(TEST_CONFIG.split("providers:")[0]
                            + "providers:\n  - {name: dry, type: sandbox}\n")
    for value in UNICODE.values():
        response = await gw.send(template="notice", params={"name": value, "time": value})
        body = await check(response)
        assert response.status == 200
        assert isinstance(body, dict) and body["provider"] == "dry"


# -- malformed HTTP (aiohttp's parser answers before any handler runs) -----------------------

@pytest.mark.parametrize("raw", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: \x00\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /sms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /sms HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",  # request smuggling
    b"POST /sms HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 9\r\n\r\n",
    b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
])
async def test_malformed_http_is_a_400_without_internals(gw: Harness, raw: bytes) -> None:
    server = gw.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(raw)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    assert answer.split(b" ", 2)[1] in (b"400", b"413", b"431")
    for leak in LEAKS:
        assert leak.encode() not in answer
    assert (await gw.client.get("/healthz")).status == 200  # still serving


@pytest.mark.parametrize(("header", "status"), [
    (b"X-API-Key: \xff\xfe", 401),
    (b"Authorization: Bearer \xc3\x28", 401),
    (b"X-API-Key: k-one\r\nIdempotency-Key: \xff\xfe\x80", 200),
])
async def test_header_bytes_that_are_not_utf8(keyed: Harness, header: bytes,
                                              status: int) -> None:
    # aiohttp keeps such bytes as surrogates; a client library would never send them.
    body = json.dumps({"to": NUMBER, "template": "verify_code", "params": {"code": "1"}}).encode()
    server = keyed.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"POST /sms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + header + b"\r\nContent-Length: " + str(len(body)).encode()
                 + b"\r\nConnection: close\r\n\r\n" + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.split(b" ", 2)[1] == str(status).encode(), answer
    for leak in LEAKS:
        assert leak.encode() not in answer


# -- schema-driven: bodies generated from the served OpenAPI document ------------------------

def from_schema(schema: dict[str, Any], doc: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A strategy for the JSON Schema subset /openapi.json uses (hypothesis-jsonschema-lite)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return from_schema(doc["components"]["schemas"][name], doc)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if schema.get("type") == "object" or "properties" in schema:
        return _object(schema, doc)
    for union in ("oneOf", "anyOf"):  # pydantic writes a union of disjoint types as anyOf
        if union in schema:
            return st.one_of([from_schema(s, doc) for s in schema[union]])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "string" and "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda t: len(t) < 200)
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0),
                       max_size=schema.get("maxLength", 40))
    if kind == "number":
        return st.integers(-(10**6), 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    if kind == "integer":
        return st.integers()
    if kind == "array":
        return st.lists(from_schema(schema["items"], doc), min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 5), 5))
    raise AssertionError(f"schema construct not covered: {schema}")


def _object(schema: dict[str, Any], doc: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    alternatives = [set(alt["required"]) for alt in schema.get("oneOf", [])] or [set()]

    def build(chosen: set[str]) -> st.SearchStrategy[dict[str, Any]]:
        others = {alt_key for alt in alternatives for alt_key in alt} - chosen
        needed = {k: from_schema(properties[k], doc) for k in sorted(required | chosen)}
        optional = {k: from_schema(v, doc) for k, v in properties.items()
                    if k not in needed and k not in others}
        return st.fixed_dictionaries(needed, optional=optional)

    return st.one_of([build(alt) for alt in alternatives])


def violations(value: Any, schema: dict[str, Any], doc: dict[str, Any]) -> list[str]:
    """Where an answer breaks its documented schema, by a full JSON Schema 2020-12 validator
    (oneOf, additionalProperties, pattern and the rest), refs resolved in the document."""
    validator = Draft202012Validator({**schema, "components": doc["components"]})
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in validator.iter_errors(value)]


def test_the_validator_sees_what_the_old_subset_check_missed() -> None:
    """oneOf, additionalProperties and pattern are checked (a hand-rolled subset ignored them)."""
    doc = {"components": {"schemas": {"Id": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}}}
    schema = {"type": "object", "additionalProperties": False, "required": ["id"],
              "properties": {"id": {"$ref": "#/components/schemas/Id"},
                             "n": {"oneOf": [{"type": "integer"}, {"type": "string"}]}}}
    assert violations({"id": "0" * 32, "n": 1}, schema, doc) == []
    assert violations({"id": "0" * 32, "extra": 1}, schema, doc)
    assert violations({"id": "not-hex"}, schema, doc)
    assert violations({"id": "0" * 32, "n": 1.5}, schema, doc)


@pytest.fixture
async def openapi(gw: Harness) -> dict[str, Any]:
    response = await gw.client.get("/openapi.json")
    assert response.status == 200
    doc: dict[str, Any] = await response.json()
    assert doc["openapi"].startswith("3.1")
    return doc


async def test_the_document_describes_every_route(gw: Harness, openapi: dict[str, Any]) -> None:
    paths = set(openapi["paths"])
    assert paths >= {"/sms", "/api/sms", "/sms/{id}", "/status", "/healthz", "/readyz",
                     "/metrics", "/openapi.json", "/admin/providers/{name}/{action}"}
    codes = set(openapi["paths"]["/sms"]["post"]["responses"])
    assert {int(c) for c in codes} == TABLE
    send = openapi["components"]["schemas"]["SendRequest"]
    assert {v["title"] for v in send["oneOf"]} == {"notice", "verify_code"}
    for path, item in openapi["paths"].items():
        if "get" in item and "{" not in path:
            response = await gw.client.get(path)
            assert str(response.status) in item["get"]["responses"], path


@HYPOTHESIS
@given(data=st.data())
async def test_bodies_from_the_schema(gw: Harness, openapi: dict[str, Any],
                                      data: st.DataObject) -> None:
    operation = openapi["paths"]["/sms"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    body = data.draw(from_schema(schema, openapi), label="body")
    path = data.draw(st.sampled_from(["/sms", "/api/sms"]), label="path")
    response = await gw.client.post(path, json=body)
    answer = await check(response)
    documented = operation["responses"][str(response.status)]
    content = documented["content"]
    media = "application/json" if response.status < 400 else "application/problem+json"
    assert violations(answer, content[media]["schema"], openapi) == [], answer
    # A schema-valid body fails only on what a schema cannot say: whether a number exists,
    # and whether server.callback_hosts allows a callback_url's host.
    if response.status not in (200, 413):
        assert isinstance(answer, dict)
        fields = {e["field"].split("[")[0] for e in answer["errors"]}
        assert fields and fields <= {"to", "callback_url"}
