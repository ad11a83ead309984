"""gateway.client against a running gateway (real sockets, bundled emulators), both twins.

The blocking client runs in a worker thread so the gateway keeps serving on the test's loop.
Retry waits go to an injected sleep that records them: nothing here waits for real.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from conftest import NUMBER, TEST_CONFIG, Harness, MakeGateway
from gateway.client import (
    AsyncSmsClient,
    LimitReached,
    NotFound,
    RateLimited,
    SendFailed,
    SmsClient,
    SmsError,
    TransportError,
    Unauthorized,
    Unavailable,
    Unprocessable,
)
from gateway.client.policy import SendAnswer

API_KEY = "client-test-key"


class Api:
    """One interface over both clients: every method awaited, the sync one in a thread."""

    def __init__(self, kind: str, base_url: str, api_key: str | None, **options: Any) -> None:
        self.kind = kind
        self.waits: list[float] = []
        if kind == "sync":
            self.sync = SmsClient(base_url, api_key, sleep=self.waits.append, **options)
        else:
            async def record(seconds: float) -> None:
                self.waits.append(seconds)

            self.aio = AsyncSmsClient(base_url, api_key, sleep=record, **options)

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.kind == "sync":
            result: Any = await asyncio.to_thread(
                getattr(self.sync, method), *args, **kwargs)
            return result
        result = await getattr(self.aio, method)(*args, **kwargs)
        return result

    async def close(self) -> None:
        if self.kind == "sync":
            self.sync.close()
        else:
            await self.aio.close()


MakeApi = Callable[..., Api]


@pytest.fixture(params=["sync", "async"])
async def make_api(request: pytest.FixtureRequest) -> AsyncIterator[MakeApi]:
    made: list[Api] = []

    def make(base_url: str, api_key: str | None = None, **options: Any) -> Api:
        api = Api(request.param, base_url, api_key, **options)
        made.append(api)
        return api

    yield make
    for api in made:
        await api.close()


def url_of(gw: Harness) -> str:
    return str(gw.client.make_url("")).rstrip("/")


async def test_send_get_and_status(gw: Harness, make_api: MakeApi) -> None:
    api = make_api(url_of(gw))
    sent = await api("send", [NUMBER], "verify_code", {"code": "123456"})
    assert (sent["status"], sent["provider"]) == ("sent", "aliyun")
    assert gw.accepted("aliyun", sent["id"]) == 1
    record = await api("get", sent["id"])
    assert record["id"] == sent["id"]
    status = await api("status")
    assert [p["name"] for p in status["providers"]] == ["aliyun", "huawei"]
    with pytest.raises(NotFound) as missing:
        await api("get", "no/such id")
    assert missing.value.status == 404
    assert missing.value.problem["status"] == 404


async def test_caller_faults_are_typed_and_never_retried(gw: Harness, make_api: MakeApi) -> None:
    api = make_api(url_of(gw))
    with pytest.raises(Unprocessable) as info:
        await api("send", [NUMBER], "no_such_template", {})
    assert info.value.status == 422
    assert info.value.problem["errors"]
    assert api.waits == []


async def test_api_key_is_sent_as_a_bearer_token(make_gateway: MakeGateway,
                                                 make_api: MakeApi) -> None:
    gw = await make_gateway(TEST_CONFIG.replace("api_keys: []", f"api_keys: [{API_KEY}]"))
    with pytest.raises(Unauthorized):
        await make_api(url_of(gw))("send", NUMBER, "verify_code", {"code": "1"})
    with pytest.raises(Unauthorized):
        await make_api(url_of(gw), "wrong")("send", NUMBER, "verify_code", {"code": "1"})
    sent = await make_api(url_of(gw), API_KEY)("send", NUMBER, "verify_code", {"code": "1"})
    assert sent["status"] == "sent"


async def test_idempotency_key_replays_the_first_answer(gw: Harness, make_api: MakeApi) -> None:
    api = make_api(url_of(gw))
    first = await api("send", NUMBER, "verify_code", {"code": "1"}, idempotency_key="k-1")
    again = await api("send", NUMBER, "verify_code", {"code": "1"}, idempotency_key="k-1")
    assert again["id"] == first["id"]
    assert gw.emulators["aliyun"].state.counters["accepted"] == 1


async def test_502_nothing_sent_is_retried_with_backoff_then_raised(
        gw: Harness, make_api: MakeApi) -> None:
    await gw.mode("aliyun", "down")
    await gw.mode("huawei", "down")
    api = make_api(url_of(gw), retries=2)
    with pytest.raises(SendFailed) as info:
        await api("send", NUMBER, "verify_code", {"code": "1"})
    assert info.value.id  # the gateway's id for the failed send
    assert api.waits == [0.5, 1.0]


async def test_503_waits_retry_after_only_when_it_is_short_enough(
        gw: Harness, make_api: MakeApi) -> None:
    await gw.mode("aliyun", "disabled")
    await gw.mode("huawei", "disabled")
    first = make_api(url_of(gw), retries=0)
    with pytest.raises(SendFailed):  # both refuse: each disabled for max_open_for
        await first("send", NUMBER, "verify_code", {"code": "1"})
    impatient = make_api(url_of(gw), max_retry_wait=30)
    with pytest.raises(Unavailable) as info:
        await impatient("send", NUMBER, "verify_code", {"code": "1"})
    assert info.value.retry_after is not None and info.value.retry_after > 30
    assert impatient.waits == []  # the wait asked for is longer than the caller allows
    patient = make_api(url_of(gw), max_retry_wait=3600, retries=1)
    with pytest.raises(Unavailable):
        await patient("send", NUMBER, "verify_code", {"code": "1"})
    assert len(patient.waits) == 1 and 30 < patient.waits[0] <= info.value.retry_after
    assert gw.emulators["aliyun"].state.counters["requests"] == 1  # no retry reached one


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_refused_connection_is_retried_nothing_was_sent(make_api: MakeApi) -> None:
    api = make_api(f"http://127.0.0.1:{_closed_port()}", retries=2)
    with pytest.raises(TransportError) as info:
        await api("send", NUMBER, "verify_code", {"code": "1"})
    assert info.value.maybe_sent is False
    assert api.waits == [0.5, 1.0]


@pytest.fixture
async def slow_gateway() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A stand-in that never answers POST /sms in time and echoes GET /sms queries."""
    seen: list[dict[str, str]] = []

    async def never(_request: web.Request) -> web.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def listing(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        return web.json_response({"items": [{"id": "m1"}], "next_cursor": None})

    app = web.Application()
    app.router.add_post("/sms", never)
    app.router.add_get("/sms", listing)
    async with TestServer(app) as server:
        yield str(server.make_url("")).rstrip("/"), seen


async def test_a_timeout_is_retried_only_with_an_idempotency_key(
        slow_gateway: tuple[str, list[dict[str, str]]], make_api: MakeApi) -> None:
    api = make_api(slow_gateway[0], timeout=0.2, retries=1)
    with pytest.raises(TransportError) as info:
        await api("send", NUMBER, "verify_code", {"code": "1"})
    assert info.value.maybe_sent is True
    assert api.waits == []  # it may have been sent: a blind repeat could send it twice
    with pytest.raises(TransportError):
        await api("send", NUMBER, "verify_code", {"code": "1"}, idempotency_key="k")
    assert api.waits == [0.5]  # the key makes the repeat safe


async def test_list_passes_only_the_filters_given(
        slow_gateway: tuple[str, list[dict[str, str]]], make_api: MakeApi) -> None:
    api = make_api(slow_gateway[0])
    page = await api("list", status="sent", limit=50)
    assert page == {"items": [{"id": "m1"}], "next_cursor": None}
    assert slow_gateway[1] == [{"status": "sent", "limit": "50"}]


def test_every_problem_status_has_its_own_exception() -> None:
    from gateway.client import error_for

    for status in (400, 401, 403, 404, 409, 413, 415, 422, 429, 502, 503):
        error = error_for(status, {"detail": "d"}, {"Retry-After": "3"})
        assert type(error) is not SmsError and error.status == status
        assert error.retry_after == 3.0
    assert type(error_for(418, None, {})) is SmsError


LIMITED_CONFIG = (TEST_CONFIG
                  + "limits:\n  - {per: number, template: verify_code, max: 1, window: 1m}\n")


async def test_an_async_send_is_a_queued_result_then_its_record_ends_sent(
        gw: Harness, make_api: MakeApi) -> None:
    api = make_api(url_of(gw))
    queued = await api("send", NUMBER, "notice", {"name": "Li", "time": "9"}, mode="async",
                       ttl="10m")
    assert isinstance(queued, SendAnswer) and queued.queued and not queued.sent
    assert queued["status"] == "queued" and queued.id and queued["expires_at"]
    for _ in range(200):
        record = await api("get", queued.id)
        if record["status"] == "sent":
            break
        await asyncio.sleep(0.02)
    assert record["status"] == "sent"
    assert record["deliveries"] == []  # no receipt yet: the emulators here send none
    assert gw.accepted("aliyun", queued.id) == 1
    sync = await api("send", NUMBER, "notice", {"name": "Li", "time": "9"}, mode="sync")
    assert isinstance(sync, SendAnswer) and sync.sent and sync.status == "sent"


async def test_a_bad_ttl_and_an_unlisted_callback_url_are_422s_naming_the_field(
        gw: Harness, make_api: MakeApi) -> None:
    api = make_api(url_of(gw))
    with pytest.raises(Unprocessable) as ttl:
        await api("send", NUMBER, "notice", {"name": "Li", "time": "9"}, mode="async", ttl="1y")
    assert [e["field"] for e in ttl.value.problem["errors"]] == ["ttl"]
    with pytest.raises(Unprocessable) as hook:
        await api("send", NUMBER, "notice", {"name": "Li", "time": "9"},
                  callback_url="http://hooks.example.com/sms")
    assert "callback_url" in str(hook.value.problem)
    assert api.waits == []


async def test_the_gateways_own_limit_is_limit_reached_with_its_rule_never_retried(
        make_gateway: MakeGateway, make_api: MakeApi) -> None:
    gw = await make_gateway(LIMITED_CONFIG)
    api = make_api(url_of(gw))
    assert (await api("send", NUMBER, "verify_code", {"code": "1"})).sent
    with pytest.raises(LimitReached) as info:
        await api("send", NUMBER, "verify_code", {"code": "2"})
    refused = info.value
    assert isinstance(refused, RateLimited) and refused.status == 429
    assert refused.rule == "number:verify_code:1/1m"
    assert refused.rules == [refused.rule]
    assert refused.retry_after is not None and 1 <= refused.retry_after <= 60
    assert refused.id  # the rate_limited record
    assert (await api("get", refused.id))["status"] == "rate_limited"
    assert api.waits == []
    assert gw.emulators["aliyun"].state.counters["accepted"] == 1


async def test_records_follow_the_cursor_through_every_page(
        gw: Harness, make_api: MakeApi) -> None:
    api = make_api(url_of(gw))
    ids = [(await api("send", NUMBER, "notice", {"name": "A", "time": str(i)})).id
           for i in range(5)]
    if api.kind == "sync":
        seen = await asyncio.to_thread(
            lambda: [r["id"] for r in api.sync.records(template="notice", page_size=2)])
    else:
        seen = [r["id"] async for r in api.aio.records(template="notice", page_size=2)]
    assert seen == ids[::-1]


def test_a_limit_exceeded_problem_is_limit_reached_a_provider_429_is_not() -> None:
    from gateway.client import error_for

    ours = error_for(429, {"type": "urn:sms-gateway:problem:limit-exceeded",
                           "errors": [{"limit": "a", "to": "x"}, {"limit": "b", "to": "x"},
                                      {"limit": "a", "to": "y"}]}, {"Retry-After": "40"})
    assert type(ours) is LimitReached and (ours.rule, ours.rules) == ("a", ["a", "b"])
    assert ours.retry_after == 40.0
    theirs = error_for(429, {"type": "urn:sms-gateway:problem:recipient-rate-limited"}, {})
    assert type(theirs) is RateLimited and theirs.retry_after is None
