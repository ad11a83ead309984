"""Hardening of the send path (issue 8): one request must never take the gateway down.

Text that cannot be encoded and numbers that are not finite are the caller's 422; anything that
goes wrong before a request leaves the gateway is the gateway's own fault and never a breaker
failure; a client that hangs up mid-body is counted as ``aborted``, not as a 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from bench.configs import provider
from conftest import NUMBER, TEST_CONFIG, Harness, MakeGateway, build_config
from gateway.app import create_app
from gateway.cli import emulated_loader
from gateway.emulators import EMULATOR_CREDENTIALS, EMULATOR_OPTIONS, EmulatorServer
from gateway.keys import gateway_key
from gateway.reload import reload_now
from providers.aliyun import AliyunProvider
from providers.base import (
    Delivery,
    Health,
    Message,
    Provider,
    ProviderSettings,
    Secret,
    SendResult,
)
from providers.http import exchange, make_session
from providers.huawei import HuaweiProvider


async def post_raw(gw: Harness, body: Any) -> tuple[int, str, dict[str, Any]]:
    """POST a body as JSON text; json.dumps writes a lone surrogate as \\ud800 and nan as NaN,
    which json.loads reads back (a str body is sent as written)."""
    text = body if isinstance(body, str) else json.dumps(body)
    response = await gw.client.post("/sms", data=text.encode(),
                                    headers={"Content-Type": "application/json"})
    body = await response.read()
    return response.status, response.content_type, json.loads(body)


async def metric(gw: Harness, line_start: str) -> float | None:
    """The value of the first /metrics line starting with ``line_start``."""
    text = await (await gw.client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


def requests_at_providers(gw: Harness) -> int:
    return sum(e.state.counters["requests"] for e in gw.emulators.values())


# -- item 1: a lone surrogate opened every breaker ---------------------------------------------

async def test_a_lone_surrogate_in_a_param_is_a_422_and_trips_nothing(gw: Harness) -> None:
    body = {"to": [NUMBER], "template": "verify_code", "params": {"code": "12\ud800"}}
    for _ in range(8):  # more than consecutive_failures for both providers
        status, content_type, problem = await post_raw(gw, body)
        assert (status, content_type) == (422, "application/problem+json")
        assert {"field": "params.code", "message": problem["errors"][0]["message"]} \
            in problem["errors"]
        assert "encoded" in problem["errors"][0]["message"]
    assert requests_at_providers(gw) == 0
    assert gw.state("aliyun") == gw.state("huawei") == "closed"
    assert (await gw.send()).status == 200


class RaisesBeforeSending(Provider):
    """A provider whose request building fails: nothing ever leaves the gateway."""

    type_name = "raises-before-sending"
    needs_template_ids = False

    async def send(self, message: Message, timeout: float) -> SendResult:
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")


class SendsToAnInvalidURL(Provider):
    """A provider whose request aiohttp refuses to send (an ``InvalidURL``)."""

    type_name = "sends-to-an-invalid-url"
    needs_template_ids = False

    async def send(self, message: Message, timeout: float) -> SendResult:
        return await exchange(self.session, "POST", "http://[broken/", timeout, code="code",
                              classify=lambda _, code: SendResult.accepted(code))


def broken_first(cls: type[Provider]) -> str:
    broken = {"name": "broken", "type": f"test_hardening_send:{cls.__name__}", "priority": 0}
    return build_config(providers=[broken, provider("aliyun", priority=1),
                                   provider("huawei", priority=2)])


@pytest.mark.parametrize(("cls", "traceback"), [(RaisesBeforeSending, True),
                                                (SendsToAnInvalidURL, False)])
async def test_an_error_before_the_request_leaves_is_ours_not_the_providers(
    make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture, cls: type[Provider],
    traceback: bool,
) -> None:
    gw = await make_gateway(broken_first(cls))
    caplog.set_level(logging.WARNING)
    for _ in range(6):  # on_unknown: stop would answer 202 for an "unknown" outcome
        response = await gw.send("notice", params={"name": "A", "time": "B"})
        body = await response.json()
        assert response.status == 200, body
        assert body["provider"] == "aliyun"
        first = body["attempts"][0]
        assert (first["provider"], first["outcome"]) == ("broken", "failed")
        assert "not sent" in first["error"]
    assert gw.state("broken") == "closed"  # never a breaker failure
    assert await metric(gw, 'sms_attempts_total{outcome="unknown",provider="broken"}') is None
    assert await metric(gw, 'sms_attempts_total{outcome="not_sent",provider="broken"}') == 6
    ours = [r for r in caplog.records if "broken" in r.getMessage()]
    assert len(ours) == 6  # logged once per attempt, with the traceback of an exception
    assert all(bool(r.exc_info) is traceback for r in ours)


# -- item 9: NaN and Infinity were sent as "NaN" ------------------------------------------------

@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
async def test_non_finite_numbers_in_params_are_a_422(gw: Harness, value: str) -> None:
    body = json.dumps({"to": NUMBER, "template": "verify_code", "params": {"code": 0}})
    body = body.replace('"code": 0', f'"code": {value}')
    status, content_type, problem = await post_raw(gw, body)
    assert (status, content_type) == (422, "application/problem+json")
    assert problem["errors"] == [{"field": "params.code", "message": "must be a finite number"}]
    assert requests_at_providers(gw) == 0


async def test_finite_numbers_in_params_are_still_sent(gw: Harness) -> None:
    status, _, body = await post_raw(
        gw, {"to": NUMBER, "template": "verify_code", "params": {"code": 1.5e3}})
    assert status == 200, body


# -- item 6: a lone surrogate in a name was a text/plain 500 ------------------------------------

@pytest.mark.parametrize("body", [
    {"\ud800": 1, "to": NUMBER, "template": "verify_code"},
    {"to": NUMBER, "template": "verify_code", "params": {"code": "1", "\udfff": "x"}},
    {"to": NUMBER, "template": "verify_code", "params": {"\ud800": None}},
    {"to": NUMBER, "template": "\ud800", "params": {}},
    {"to": "\ud800", "template": "verify_code", "params": {"code": "1"}},
    {"to": NUMBER, "template": "verify_code", "params": {"code": "1"}, "\udc80": "\udc80"},
])
async def test_a_lone_surrogate_anywhere_is_answered_as_problem_json(
    gw: Harness, body: dict[str, Any],
) -> None:
    status, content_type, problem = await post_raw(gw, body)
    assert status in (400, 422), problem
    assert content_type == "application/problem+json"
    assert problem["status"] == status
    assert requests_at_providers(gw) == 0


async def test_a_surrogate_field_name_is_shown_escaped(gw: Harness) -> None:
    status, _, problem = await post_raw(gw, {"\ud800x": 1, "to": NUMBER,
                                             "template": "verify_code"})
    assert status == 400
    assert problem["errors"] == [{"field": "\\ud800x", "message": "unknown field"}]


# -- item 5: a client that hangs up mid-body was a 500 with a traceback -------------------------

@pytest.fixture
async def production(emulators: dict[str, EmulatorServer],
                     tmp_path: Path) -> AsyncIterator[tuple[str, web.Application]]:
    """The gateway served as ``sms-gateway`` serves it: the test server cancels handlers whose
    client goes away, the real runner lets them run (aiohttp's default), so a read fails."""
    path = tmp_path / "config.yaml"
    path.write_text(TEST_CONFIG)
    app = create_app(emulated_loader(path, emulators)(), emulators=emulators)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("framing", [b"Content-Length: 1000\r\n\r\n{\"to\": \"+86",
                                     b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"to\""])
async def test_a_client_abort_mid_body_is_counted_as_aborted_without_an_error_log(
    production: tuple[str, web.Application], caplog: pytest.LogCaptureFixture, framing: bytes,
) -> None:
    url, app = production
    caplog.set_level(logging.DEBUG)
    port = URL(url).port
    for _ in range(3):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /sms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + framing)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    requests = app[gateway_key].metrics.requests
    deadline = time.monotonic() + 10
    while requests.labels("aborted")._value.get() < 3:
        assert time.monotonic() < deadline, "the aborts were not counted"
        await asyncio.sleep(0.01)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/metrics") as response:
            text = await response.text()
        async with session.post(f"{url}/sms", json={"to": NUMBER, "template": "verify_code",
                                                    "params": {"code": "1"}}) as response:
            assert response.status == 200
    assert 'sms_requests_total{status="aborted"} 3.0' in text
    assert 'status="500"' not in text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- item 2: waiting for a pooled connection counted as a provider timeout -----------------------

def pooled(size: int, wait: str, timeout: str = "500ms", huawei: bool = True) -> str:
    huawei_entry = provider("huawei", priority=2)
    if not huawei:
        huawei_entry["enabled"] = False
    return build_config(server={"pool_size": size, "pool_wait": wait},
                        defaults={"timeout": timeout, "deadline": "60s"},
                        providers=[provider("aliyun", priority=1), huawei_entry])


NOTICE = {"name": "A", "time": "B"}  # on_unknown: stop, so "unknown" would be answered 202


async def hold_the_only_connection(gw: Harness) -> asyncio.Task[Any]:
    """A send that occupies aliyun's one pooled connection until cancelled."""
    await gw.mode("aliyun", "hang")
    held = asyncio.create_task(gw.send("notice", params=NOTICE))
    deadline = time.monotonic() + 10
    while gw.emulators["aliyun"].state.counters["requests"] < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    return held


async def test_no_pooled_connection_in_time_fails_over_and_spares_the_breaker(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(pooled(1, "50ms", timeout="30s"))
    held = await hold_the_only_connection(gw)
    for _ in range(4):  # more than consecutive_failures
        response = await gw.send("notice", params=NOTICE)
        body = await response.json()
        assert response.status == 200, body
        assert body["provider"] == "huawei"
        first = body["attempts"][0]
        assert (first["provider"], first["outcome"]) == ("aliyun", "failed")
        assert "not sent" in first["error"] and "pool" in first["error"]
    assert gw.state("aliyun") == "closed"
    assert gw.emulators["aliyun"].state.counters["requests"] == 1  # only the held one
    assert await metric(gw, 'sms_pool_timeouts_total{provider="aliyun"}') == 4
    assert await metric(gw, 'sms_pool_wait_seconds_count{provider="aliyun"}') == 4
    held.cancel()


async def test_no_pooled_connection_anywhere_is_a_503(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(pooled(1, "50ms", timeout="30s", huawei=False))
    held = await hold_the_only_connection(gw)
    response = await gw.send("notice", params=NOTICE)
    body = await response.json()
    assert response.status == 503, body
    assert response.headers["Retry-After"] == "1"
    assert body["attempts"][0]["outcome"] == "failed"
    assert gw.state("aliyun") == "closed"
    held.cancel()


async def test_time_queued_for_a_connection_does_not_eat_the_attempts_timeout(
    make_gateway: MakeGateway,
) -> None:
    # Twelve sends share one connection, 150 ms each: the last queues ~1.7 s, far past the
    # 1 s attempt timeout, which only starts when it gets the connection.
    gw = await make_gateway(pooled(1, "60s", timeout="1s", huawei=False))
    await gw.mode("aliyun", "latency", 150)
    responses = await asyncio.gather(*(gw.send("notice", params=NOTICE) for _ in range(12)))
    bodies = [await r.json() for r in responses]
    assert [r.status for r in responses] == [200] * 12, bodies
    assert await metric(gw, 'sms_pool_wait_seconds_count{provider="aliyun"}') == 11
    assert gw.state("aliyun") == "closed"


# -- issue 9 item 5: an answer without a provider code is classified in one place ----------------

@pytest.mark.parametrize(("status", "expected"), [
    (200, (Delivery.UNKNOWN, Health.FAILURE)),  # a 2xx or 5xx may have been acted on
    (503, (Delivery.UNKNOWN, Health.FAILURE)),
    (404, (Delivery.SAFE, Health.FAILURE)),  # refused before it was processed
    (429, (Delivery.SAFE, Health.THROTTLED)),  # from a proxy: back off, whoever says it
])
async def test_an_answer_without_a_code_means_the_same_from_every_provider(
    aiohttp_server: Any, status: int, expected: tuple[Delivery, Health],
) -> None:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status, text="<html>Bad Gateway</html>",
                            headers={"Retry-After": "7"}, content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    server = await aiohttp_server(app)
    sms = Message(id="m1", to=(NUMBER,), template="verify_code", params={"code": "1"})
    results = []
    async with make_session() as session:
        for kind, cls in (("aliyun", AliyunProvider), ("huawei", HuaweiProvider)):
            settings = ProviderSettings(
                name=kind, type=kind, endpoint=str(server.make_url("")).rstrip("/"),
                credentials={k: Secret(v) for k, v in EMULATOR_CREDENTIALS[kind].items()},
                templates={"verify_code": "T1"}, options=EMULATOR_OPTIONS[kind])
            results.append(await cls(settings, session).send(sms, timeout=5))
    assert [(r.delivery, r.health) for r in results] == [expected, expected]
    if status == 429:
        assert [r.retry_after for r in results] == [7.0, 7.0]


async def test_a_reload_that_resizes_the_pool_says_it_applies_at_the_next_start(
    make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture,
) -> None:
    gw = await make_gateway(pooled(200, "1s"))
    gw.config_path.write_text(pooled(50, "2s"))
    caplog.set_level(logging.WARNING)
    assert await reload_now(gw.gateway)
    assert gw.gateway.runtime.config.server.pool_wait == 2.0  # read per send: applied
    assert [r.getMessage() for r in caplog.records if "pool_size" in r.getMessage()] == [
        "server.pool_size 50 applies at the next start; the pool keeps 200 connections per "
        "provider host"]
