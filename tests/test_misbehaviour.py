"""Providers misbehaving below their protocol: each classified, bounded in time and memory.

Every mode here leaves the gateway unable to tell whether the message went out, so each must be
an ``unknown`` attempt: a ``failover`` template then tries the next provider (200 from it), a
``stop`` template answers 202 and never risks a duplicate. Both emulators, every mode.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import tracemalloc
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import providers.http
from conftest import NUMBER, TEST_CONFIG, Harness, MakeGateway
from providers.aliyun import AliyunProvider
from providers.base import Delivery, Health, Message, ProviderSettings, Secret, SendResult
from providers.http import MAX_RESPONSE_BYTES, MAX_RETRY_AFTER, exchange, make_session, retry_after
from providers.sandbox import SandboxProvider

TIMEOUT = 0.5  # the test config's per-attempt timeout
SLACK = 1.0  # scheduling, the failover attempt, and the 202/200 answer

# mode -> the attempt's error, per provider (a reason, never a body)
REASONS: dict[str, dict[str, str]] = {
    "garbage": {"aliyun": "HTTP 200: no Code", "huawei": "HTTP 200: no code"},  # invalid JSON
    "html": {"aliyun": "HTTP 502: no Code", "huawei": "HTTP 502: no code"},  # a proxy's page
    "unknown_code": {"aliyun": "isv.SOMETHING_NEW", "huawei": "E999999"},  # 200, unknown code
    "huge": {"aliyun": "HTTP 200: response too large", "huawei": "HTTP 200: response too large"},
    "reset": {"aliyun": "connection lost: ClientPayloadError",
              "huawei": "connection lost: ClientPayloadError"},  # RST mid-body
    "drip": {"aliyun": "timeout", "huawei": "timeout"},  # slowloris: bounded by the timeout
    "hang": {"aliyun": "timeout", "huawei": "timeout"},
}
OTHER = {"aliyun": "huawei", "huawei": "aliyun"}
NOTICE = {"name": "Ann", "time": "9:00"}


async def first(make_gateway: MakeGateway, provider: str) -> Harness:
    """A gateway that tries ``provider`` first."""
    if provider == "huawei":
        return await make_gateway(TEST_CONFIG.replace("priority: 2", "priority: 0"))
    return await make_gateway()


async def timed_send(gw: Harness, template: str) -> tuple[int, dict[str, Any], float]:
    params = NOTICE if template == "notice" else None
    started = time.monotonic()
    response = await gw.send(template=template, params=params)
    body = await response.json()
    return response.status, body, time.monotonic() - started


@pytest.mark.parametrize("mode", list(REASONS))
@pytest.mark.parametrize("provider", ["aliyun", "huawei"])
async def test_misbehaviour_is_unknown_and_bounded(make_gateway: MakeGateway, provider: str,
                                                   mode: str) -> None:
    gw = await first(make_gateway, provider)
    other = OTHER[provider]
    await gw.mode(provider, mode)

    status, body, elapsed = await timed_send(gw, "verify_code")  # on_unknown: failover
    assert status == 200, body
    assert elapsed < TIMEOUT + SLACK
    assert [(a["provider"], a["outcome"]) for a in body["attempts"]] == [
        (provider, "unknown"), (other, "accepted")]
    assert body["attempts"][0]["error"] == REASONS[mode][provider]
    assert body["attempts"][0]["duration_ms"] < (TIMEOUT + 0.25) * 1000
    assert gw.accepted(other, body["id"]) == 1
    assert gw.accepted(provider, body["id"]) == 0

    before = gw.emulators[other].state.counters["requests"]
    status, body, elapsed = await timed_send(gw, "notice")  # on_unknown: stop (the default)
    assert status == 202, body
    assert elapsed < TIMEOUT + SLACK
    assert body["status"] == "unknown"
    assert [(a["provider"], a["outcome"], a["error"]) for a in body["attempts"]] == [
        (provider, "unknown", REASONS[mode][provider])]
    assert gw.emulators[other].state.counters["requests"] == before  # no duplicate risked

    # Each counts against the breaker as a failure (two of three: still closed).
    member = gw.gateway.runtime.member(provider)
    assert member is not None
    assert member.stats.unknown == 2
    assert gw.state(provider) == "closed"
    text = await (await gw.client.get("/status")).text()
    assert "Padding" not in text and "<html>" not in text  # never a raw provider body


@pytest.mark.parametrize("provider", ["aliyun", "huawei"])
async def test_three_misbehaving_answers_open_the_breaker(make_gateway: MakeGateway,
                                                          provider: str) -> None:
    gw = await first(make_gateway, provider)
    await gw.mode(provider, "garbage")
    for _ in range(3):  # consecutive_failures: 3
        assert (await gw.send()).status == 200
    assert gw.state(provider) == "open"


async def test_huge_body_is_not_read_past_the_limit(gw: Harness,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    real = providers.http._read_bounded

    async def spy(stream: Any, limit: int) -> bytes:
        body = await real(stream, limit)
        sizes.append(len(body))
        return body

    monkeypatch.setattr(providers.http, "_read_bounded", spy)
    await gw.mode("aliyun", "huge")  # a 10 MB answer
    tracemalloc.start()
    try:
        response = await gw.send(template="notice", params=NOTICE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status == 202
    assert sizes == [MAX_RESPONSE_BYTES + 1]
    assert peak < 4 * 1024 * 1024  # a few buffers, never the 10 MB


async def test_an_answer_split_across_packets_is_read_whole(aiohttp_server: Any) -> None:
    """A success that arrives in pieces is a success, not "no Code" (a maybe-sent duplicate)."""
    answer = (b'{"RequestId": "F655A8D5", "Message": "OK", "BizId": "900619746936498440^0", '
              b'"Code": "OK"}')

    async def split(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(answer)
        await response.prepare(request)
        for index in range(0, len(answer), 16):
            await response.write(answer[index:index + 16])
            await asyncio.sleep(0.01)
        return response

    app = web.Application()
    app.router.add_post("/", split)
    server: TestServer = await aiohttp_server(app)
    settings = ProviderSettings(
        "aliyun", "aliyun", str(server.make_url("")).rstrip("/"),
        {"access_key_id": Secret("id"), "access_key_secret": Secret("secret")},
        {"notice": "SMS_1"}, {"sign_name": "Test"})
    async with make_session() as session:
        result = await AliyunProvider(settings, session).send(
            Message("m1", (NUMBER,), "notice", NOTICE), timeout=2.0)
    assert (result.delivery, result.health) == (Delivery.ACCEPTED, Health.SUCCESS)
    assert result.provider_message_id == "900619746936498440^0"


async def test_sandboxes_share_no_state() -> None:
    """Two sandbox providers (two apps, or one before and after a reload) in one process."""
    settings = ProviderSettings("dry", "sandbox", None, {}, {}, {})
    first, second = (SandboxProvider(settings, None) for _ in range(2))  # type: ignore[arg-type]
    message = Message("m1", (NUMBER,), "notice", NOTICE)
    await first.send(Message("m0", (NUMBER,), "notice", NOTICE), 1.0)
    ids = [(await p.send(message, 1.0)).provider_message_id for p in (first, second)]
    assert ids == ["sandbox-m1", "sandbox-m1"]  # what one sent before changes nothing


class ForeverProvider(SandboxProvider):
    """A provider that asks to be left alone forever: ``Retry-After: inf`` (``1e999`` parses)."""

    needs_template_ids = False

    async def send(self, message: Message, timeout: float) -> SendResult:
        if message.template == "notice":
            return SendResult(Delivery.RCPT_LIMIT, Health.IGNORED, "limit", retry_after=math.inf)
        return SendResult(Delivery.SAFE, Health.THROTTLED, "throttled", retry_after=math.inf)


@pytest.mark.parametrize(("header", "expected"), [
    ("1e999", MAX_RETRY_AFTER), ("inf", MAX_RETRY_AFTER), ("86400000", MAX_RETRY_AFTER),
    ("nan", None), ("-5", None), ("0", None), ("soon", None), ("", None),
    ("30", 30.0), ("0.5", 0.5),
])
def test_a_retry_after_header_is_a_bounded_number_or_nothing(
        header: str, expected: float | None) -> None:
    assert retry_after({"Retry-After": header}) == expected


async def test_a_provider_asking_for_forever_gets_a_day(make_gateway: MakeGateway
                                                               ) -> None:
    gw = await make_gateway(TEST_CONFIG.split("providers:")[0] + "providers:\n"
                            "  - {name: forever, type: test_misbehaviour:ForeverProvider}\n")
    limited = await gw.send(template="notice", params=NOTICE)
    assert limited.status == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= MAX_RETRY_AFTER
    assert (await gw.send()).status == 502  # throttled: safe, and nobody else to try
    refused = await gw.send()
    assert refused.status == 503  # open for as long as it asked, up to a day
    assert int(refused.headers["Retry-After"]) == MAX_RETRY_AFTER
    status = await gw.client.get("/status")
    assert status.status == 200
    json.loads(await status.text())  # strict JSON: no Infinity
    assert (await gw.client.get("/")).status == 200


async def test_a_tls_failure_is_safe_and_named_as_such(aiohttp_server: Any) -> None:
    plain: TestServer = await aiohttp_server(web.Application())  # speaks HTTP, not TLS
    async with make_session() as session:
        result = await exchange(session, "POST", f"https://127.0.0.1:{plain.port}/", 2.0,
                                code="Code", classify=lambda _, code: SendResult.accepted(code))
    assert (result.delivery, result.health) == (Delivery.SAFE, Health.FAILURE)
    assert result.reason == "connect failed: tls: wrong_version_number"  # not an errno's text
