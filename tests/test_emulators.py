"""The emulators over real sockets, driven by the gateway's own provider clients and by raw HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from gateway.emulators import (
    EMULATOR_CREDENTIALS,
    EMULATOR_OPTIONS,
    MODES,
    EmulatorServer,
    EmulatorState,
    control_routes,
    start_emulators,
)
from gateway.emulators.aliyun import acs3_string_to_sign
from gateway.emulators.receipts import ReceiptSender
from providers import REGISTRY, aliyun_sign, tencent, twilio, wsse
from providers.base import (
    Delivery,
    Health,
    Message,
    Provider,
    ProviderSettings,
    Secret,
)
from providers.http import make_session
from providers.huawei import PATH

_ids = itertools.count(1)
Starter = Callable[[str], Awaitable[EmulatorServer]]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with make_session() as client_session:
        yield client_session


@pytest.fixture
async def start_emulator() -> AsyncIterator[Starter]:
    """Start emulators of any kind; every one is stopped after the test."""
    started: list[EmulatorServer] = []

    async def start(kind: str) -> EmulatorServer:
        emulator = EmulatorServer(kind)
        await emulator.start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        await emulator.stop()


@pytest.fixture(params=["aliyun", "huawei", "tencent", "twilio"])
async def server(request: pytest.FixtureRequest, start_emulator: Starter) -> EmulatorServer:
    return await start_emulator(request.param)


@pytest.fixture
async def aliyun(start_emulator: Starter) -> EmulatorServer:
    return await start_emulator("aliyun")


@pytest.fixture
async def huawei(start_emulator: Starter) -> EmulatorServer:
    return await start_emulator("huawei")


TEMPLATE_IDS = {"aliyun": "SMS_154950909", "huawei": "8ff55eac", "tencent": "1110",
                "twilio": "Your code is {code}"}


def client(server: EmulatorServer, session: aiohttp.ClientSession) -> Provider:
    """The gateway's provider class for this emulator, with the emulator's credentials."""
    settings = ProviderSettings(
        name=server.kind, type=server.kind, endpoint=server.url,
        credentials={k: Secret(v) for k, v in EMULATOR_CREDENTIALS[server.kind].items()},
        templates={"verify_code": TEMPLATE_IDS[server.kind]},
        options=EMULATOR_OPTIONS[server.kind])
    return REGISTRY[server.kind](settings, session)


def message() -> Message:
    return Message(id=f"msg-{next(_ids)} a*b~c", to=("+8613800138000",), template="verify_code",
                   params={"code": "123456"})


async def test_ok_is_accepted_and_recorded(server: EmulatorServer,
                                           session: aiohttp.ClientSession) -> None:
    sms = message()
    result = await client(server, session).send(sms, timeout=2)
    assert (result.delivery, result.health) == (Delivery.ACCEPTED, Health.SUCCESS)
    assert result.provider_message_id
    assert server.state.accepted[sms.id] == 1
    assert server.state.counters["requests"] == server.state.counters["accepted"] == 1
    record = server.state.messages[-1]
    assert record["id"] == sms.id
    assert record["provider_message_id"] == result.provider_message_id
    assert record["to"] in (["8613800138000"], ["+8613800138000"])
    assert json.loads(json.dumps(server.state.snapshot()))["accepted_total"] == 1


_U, _S, _C = Delivery.UNKNOWN, Delivery.SAFE, Delivery.CALLER
_F, _I = Health.FAILURE, Health.IGNORED
# mode -> kind -> (delivery, health, reason contains, retry_after); None: same for both kinds.
EXPECTED: dict[str, dict[str | None, tuple[Delivery, Health, str, float | None]]] = {
    "fail": {"aliyun": (_U, _F, "isp.SYSTEM_ERROR", None), "huawei": (_U, _F, "E000000", None)},
    "reject": {"aliyun": (_C, _I, "isv.MOBILE_NUMBER_ILLEGAL", None),
               "huawei": (_C, _I, "E000503", None)},
    "throttle": {"aliyun": (_S, Health.THROTTLED, "Throttling.User", 2.0),
                 "huawei": (_S, Health.THROTTLED, "HTTP 429", 2.0)},
    "limit": {"aliyun": (Delivery.RCPT_LIMIT, _I, "isv.BUSINESS_LIMIT_CONTROL", 60.0),
              "huawei": (Delivery.RCPT_LIMIT, _I, "E200015", None)},
    "disabled": {"aliyun": (_S, Health.DISABLED, "isv.AMOUNT_NOT_ENOUGH", None),
                 "huawei": (_S, Health.DISABLED, "E000112", None)},
    "garbage": {None: (_U, _F, "HTTP 200: no", None)},
    "html": {None: (_U, _F, "HTTP 502", None)},
    "unknown_code": {"aliyun": (_U, _F, "isv.SOMETHING_NEW", None),
                     "huawei": (_U, _F, "E999999", None)},
    "huge": {None: (_U, _F, "too large", None)},
    "reset": {None: (_U, _F, "connection lost", None)},
    "hang": {None: (_U, _F, "timeout", None)},
    "drip": {None: (_U, _F, "timeout", None)},
}
TIMEOUTS = {"hang": 0.3, "drip": 0.5}
CASES = [pytest.param(kind, mode, id=f"{kind}-{mode}")
         for mode in EXPECTED for kind in ("aliyun", "huawei")]


@pytest.mark.parametrize(("kind", "mode"), CASES)
async def test_mode_is_classified(kind: str, mode: str, start_emulator: Starter,
                                  session: aiohttp.ClientSession) -> None:
    emulator = await start_emulator(kind)
    await emulator.apply(mode)
    result = await client(emulator, session).send(message(), timeout=TIMEOUTS.get(mode, 5))
    state = emulator.state
    delivery, health, reason, retry_after = EXPECTED[mode].get(kind) or EXPECTED[mode][None]
    assert (result.delivery, result.health, result.retry_after) == (delivery, health,
                                                                     retry_after), result
    assert reason in result.reason
    assert state.counters["requests"] == 1
    assert state.counters["accepted"] == 0
    assert not state.accepted and not state.messages


async def test_latency_mode_delays_then_accepts(server: EmulatorServer,
                                                session: aiohttp.ClientSession) -> None:
    await server.apply("latency", latency_ms=50)
    result = await client(server, session).send(message(), timeout=2)
    assert result.delivery is Delivery.ACCEPTED
    assert server.state.snapshot()["latency_ms"] == 50
    await server.apply("hang")  # latency stays unless given
    assert server.state.latency_ms == 50


async def test_down_refuses_then_comes_back_on_the_same_port(
        server: EmulatorServer, session: aiohttp.ClientSession) -> None:
    provider = client(server, session)
    assert (await provider.send(message(), timeout=2)).delivery is Delivery.ACCEPTED
    port = server.port
    await server.apply("down")  # the pooled keep-alive connection must not survive this
    refused = await provider.send(message(), timeout=2)
    assert (refused.delivery, refused.health) == (Delivery.SAFE, Health.FAILURE)
    assert "connect failed" in refused.reason
    await server.apply("ok")
    assert server.port == port
    assert (await provider.send(message(), timeout=2)).delivery is Delivery.ACCEPTED
    assert server.state.counters["accepted"] == 2


async def test_leaving_down_while_the_port_is_taken_stays_down(server: EmulatorServer) -> None:
    await server.apply("down")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", server.port))
        squatter.listen()
        with pytest.raises(OSError):
            await server.apply("ok")
        assert server.state.mode == "down"
    await server.apply("ok")
    assert server.state.mode == "ok"


async def test_stop_ends_a_hanging_request_promptly(server: EmulatorServer,
                                                    session: aiohttp.ClientSession) -> None:
    await server.apply("hang")
    send = asyncio.create_task(client(server, session).send(message(), timeout=30))
    async with asyncio.timeout(5):
        while server.state.counters["requests"] == 0:
            await asyncio.sleep(0.01)
    await server.stop()
    result = await asyncio.wait_for(send, 5)  # far below the client's own 30 s timeout
    assert result.delivery is Delivery.UNKNOWN
    assert "connection lost" in result.reason


async def test_start_emulators_gives_each_kind_its_own_port() -> None:
    servers = await start_emulators()
    try:
        assert set(servers) == {"aliyun", "huawei", "tencent", "twilio"}
        assert len({server.port for server in servers.values()}) == 4
        assert servers["aliyun"].port != servers["huawei"].port
        assert servers["aliyun"].url == f"http://127.0.0.1:{servers['aliyun'].port}"
    finally:
        for emulator in servers.values():
            await emulator.stop()


def test_state_modes_and_reset() -> None:
    state = EmulatorState("aliyun")
    state.record_accept("m1", ["8613800138000"], "SMS_1", {"code": "1"}, "biz")
    state.set_mode("fail", latency_ms=10)
    with pytest.raises(ValueError, match="valid modes: ok, fail"):
        state.set_mode("sideways")
    with pytest.raises(ValueError, match="latency_ms"):
        state.set_mode("ok", latency_ms=-1)
    state.reset()
    assert state.snapshot() == {"kind": "aliyun", "mode": "fail", "latency_ms": 10,
                                "counters": dict.fromkeys(
                                    ("requests", "accepted", "rejected", "auth_failures",
                                     "faults", "receipts", "receipt_failures"), 0),
                                "accepted_total": 0, "receipt_mode": "deliver",
                                "receipt_delay": 1.0, "receipts_configured": False}
    assert not state.messages
    assert set(MODES) >= {"ok", "fail", "reject", "throttle", "down", "hang", "latency"}


# Raw HTTP: the provider's own error answers.

ALIYUN_KEY = EMULATOR_CREDENTIALS["aliyun"]["access_key_id"]
ALIYUN_SECRET = EMULATOR_CREDENTIALS["aliyun"]["access_key_secret"]


def utc(offset: float = 0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset))


def aliyun_params(method: str = "POST", secret: str = ALIYUN_SECRET,
                  **overrides: str) -> dict[str, str]:
    params = {
        "AccessKeyId": ALIYUN_KEY, "Action": "SendSms", "Format": "JSON", "OutId": "raw 1",
        "PhoneNumbers": "8613800138000", "SignName": "SMS Gateway",
        "SignatureMethod": "HMAC-SHA1", "SignatureNonce": f"nonce-{next(_ids)}-{time.time()}",
        "SignatureType": "", "SignatureVersion": "1.0", "TemplateCode": "SMS_1",
        "TemplateParam": '{"code":"1234"}', "Timestamp": utc(), "Version": "2017-05-25",
        **overrides,
    }
    params["Signature"] = aliyun_sign.signature(method, params, secret)
    return params


async def call_aliyun(server: EmulatorServer, params: dict[str, str],
                      method: str = "POST") -> tuple[int, dict[str, Any]]:
    url = yarl.URL(f"{server.url}/?{aliyun_sign.wire_query(params)}", encoded=True)
    async with aiohttp.ClientSession() as http, http.request(method, url) as response:
        return response.status, await response.json()


async def test_aliyun_wrong_secret_shows_the_server_string(aliyun: EmulatorServer) -> None:
    params = aliyun_params(secret="not-the-secret")
    status, body = await call_aliyun(aliyun, params)
    assert (status, body["Code"]) == (400, "SignatureDoesNotMatch")
    assert body["Message"].endswith("server string to sign is:"
                                    + aliyun_sign.string_to_sign("POST", params))
    # The old SDK compares Message.split(':')[1] with its own StringToSign.
    assert body["Message"].split(":")[1] == aliyun_sign.string_to_sign("POST", params)
    assert body["RequestId"] and body["HostId"] == "dysmsapi.aliyuncs.com"
    assert aliyun.state.counters["auth_failures"] == 1


@pytest.mark.parametrize(("overrides", "status", "code"), [
    ({"AccessKeyId": "nobody"}, 404, "InvalidAccessKeyId.NotFound"),
    ({"Timestamp": utc(-16 * 60)}, 400, "InvalidTimeStamp.Expired"),
    ({"Timestamp": "2026-11-24 08:00:00"}, 400, "InvalidTimeStamp.Format"),
    ({"Action": "SendBatchSms"}, 400, "InvalidParameter"),
    ({"PhoneNumbers": "138-0013"}, 200, "isv.MOBILE_NUMBER_ILLEGAL"),
    ({"PhoneNumbers": "\N{FULLWIDTH DIGIT ONE}3800138000"}, 200, "isv.MOBILE_NUMBER_ILLEGAL"),
    ({"TemplateParam": '{"code": 1234}'}, 200, "isv.INVALID_JSON_PARAM"),
    ({"SignName": ""}, 400, "MissingSignName"),
])
async def test_aliyun_refusals(aliyun: EmulatorServer, overrides: dict[str, str], status: int,
                               code: str) -> None:
    answer_status, body = await call_aliyun(aliyun, aliyun_params(**overrides))
    assert (answer_status, body["Code"]) == (status, code)
    assert body["RequestId"]
    assert aliyun.state.counters["accepted"] == 0


async def test_aliyun_reused_nonce_is_refused(aliyun: EmulatorServer) -> None:
    params = aliyun_params()
    assert (await call_aliyun(aliyun, params))[1]["Code"] == "OK"
    status, body = await call_aliyun(aliyun, params)
    assert (status, body["Code"]) == (400, "SignatureNonceUsed")
    assert aliyun.state.accepted["raw 1"] == 1


async def test_aliyun_get_and_form_body_are_accepted(aliyun: EmulatorServer) -> None:
    status, body = await call_aliyun(aliyun, aliyun_params("GET"), method="GET")
    assert (status, body["Code"], body["Message"]) == (200, "OK", "OK")
    assert body["BizId"].endswith("^0") and body["BizId"][:-2].isdigit()
    # A form body, as the tea SDK encodes it: space as "+", signed together with the query.
    params = aliyun_params(OutId="form id+1*~")
    query = {k: params.pop(k) for k in ("Action", "Version", "Signature")}
    url = yarl.URL(aliyun.url).with_query(query)
    async with aiohttp.ClientSession() as http, http.post(url, data=params) as response:
        assert (response.status, (await response.json())["Code"]) == (200, "OK")
    assert aliyun.state.accepted["form id+1*~"] == 1


ACS3_VECTOR = {  # provider-vectors.json: alibabacloud_dysmsapi20170525 4.6.0, captured
    "query": {"OutId": "msg-0001 a*b~c", "PhoneNumbers": "15300000001",
              "SignName": "阿里云短信测试", "TemplateCode": "SMS_154950909",
              "TemplateParam": '{"code":"1234"}'},
    "headers": {"accept": "application/json", "host": "127.0.0.1:34875",
                "user-agent": "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2",
                "x-acs-action": "SendSms",
                "x-acs-content-sha256": hashlib.sha256(b"").hexdigest(),
                "x-acs-credentials-provider": "static_ak", "x-acs-date": "2026-11-24T08:00:00Z",
                "x-acs-signature-nonce": "d3b07384d113edec49eaa6238ad5ff00",
                "x-acs-version": "2017-05-25"},
    "string_to_sign": "ACS3-HMAC-SHA256\n"
                      "25fd8a055025d6fc4a3445d47fad92cac98282d0a4f6bc8943b56a1037eb0d3e",
    "signature": "cf43c041ae6811066388737a3516b486b0b12b5638f549f4a1b4f75c534391b9",
}
ACS3_DOC = {  # the ACS3 doc's RunInstances example
    "query": {"ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
              "RegionId": "cn-shanghai"},
    "headers": {"host": "ecs.cn-shanghai.aliyuncs.com", "x-acs-action": "RunInstances",
                "x-acs-version": "2014-05-26", "x-acs-date": "2023-10-26T10:22:32Z",
                "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d",
                "x-acs-content-sha256": hashlib.sha256(b"").hexdigest()},
    "string_to_sign": "ACS3-HMAC-SHA256\n"
                      "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259",
    "signature": "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0",
}


@pytest.mark.parametrize(("vector", "secret"), [(ACS3_VECTOR, "testSecret"),
                                                (ACS3_DOC, "YourAccessKeySecret")])
def test_acs3_string_to_sign_vectors(vector: dict[str, Any], secret: str) -> None:
    names = sorted(vector["headers"])
    sts = acs3_string_to_sign("POST", vector["query"], vector["headers"], names, b"")
    assert sts == vector["string_to_sign"]
    assert hmac.new(secret.encode(), sts.encode(), hashlib.sha256).hexdigest() \
        == vector["signature"]


async def test_aliyun_acs3_request(aliyun: EmulatorServer) -> None:
    query = {"PhoneNumbers": "8613800138000", "SignName": "SMS Gateway",
             "TemplateCode": "SMS_1", "TemplateParam": '{"code":"1234"}', "OutId": "acs3 1"}
    headers = {"host": f"127.0.0.1:{aliyun.port}", "x-acs-action": "SendSms",
               "x-acs-version": "2017-05-25", "x-acs-date": utc(),
               "x-acs-signature-nonce": "acs3-nonce", "x-acs-content-sha256":
               hashlib.sha256(b"").hexdigest()}

    async def post(secret: str) -> tuple[int, dict[str, Any]]:
        names = sorted(headers)
        sts = acs3_string_to_sign("POST", query, headers, names, b"")
        signature = hmac.new(secret.encode(), sts.encode(), hashlib.sha256).hexdigest()
        authorization = (f"ACS3-HMAC-SHA256 Credential={ALIYUN_KEY},"
                         f"SignedHeaders={';'.join(names)},Signature={signature}")
        url = yarl.URL(aliyun.url).with_query(query)
        async with aiohttp.ClientSession() as http, http.post(
                url, headers={**headers, "Authorization": authorization}) as response:
            return response.status, await response.json()

    status, body = await post("wrong")
    assert (status, body["Code"]) == (400, "SignatureDoesNotMatch")
    assert "server string to sign is:ACS3-HMAC-SHA256\n" in body["Message"]
    assert (await post(ALIYUN_SECRET))[1]["Code"] == "OK"
    assert aliyun.state.accepted["acs3 1"] == 1


HUAWEI_KEY = EMULATOR_CREDENTIALS["huawei"]["app_key"]
HUAWEI_SECRET = EMULATOR_CREDENTIALS["huawei"]["app_secret"]
FORM = {"from": "csms12345678", "to": "+8613800138000,+8613900139000", "templateId": "8ff55eac",
        "templateParas": '["1234"]', "extend": "raw-h1"}


async def call_huawei(server: EmulatorServer, headers: dict[str, str],
                      data: Any = None) -> tuple[int, str, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(
            f"{server.url}{PATH}", headers=headers, data=FORM if data is None else data,
    ) as response:
        return response.status, response.headers["Content-Type"], await response.json()


def wsse_headers(key: str = HUAWEI_KEY, secret: str = HUAWEI_SECRET,
                 created: str | None = None) -> dict[str, str]:
    return {"Authorization": wsse.AUTHORIZATION,
            "X-WSSE": wsse.x_wsse(key, secret, created=created)}


async def test_huawei_success_shape(huawei: EmulatorServer) -> None:
    status, content_type, body = await call_huawei(huawei, wsse_headers())
    assert (status, content_type) == (200, "application/json;charset=UTF-8")
    assert (body["code"], body["description"]) == ("000000", "Success")
    assert [item["originTo"] for item in body["result"]] == FORM["to"].split(",")
    assert all(item["status"] == "000000" and item["from"] == "csms12345678"
               and "_" in item["smsMsgId"] for item in body["result"])
    assert huawei.state.accepted["raw-h1"] == 1


@pytest.mark.parametrize(("headers", "data", "status", "code"), [
    (wsse_headers(secret="wrong"), None, 401, "E000101"),
    (wsse_headers(key="nobody"), None, 401, "E000102"),
    (wsse_headers(created=utc(-25 * 3600)), None, 401, "E000110"),
    (wsse_headers(created="2026-11-24 08:00:00"), None, 400, "E000025"),
    ({"Authorization": wsse.AUTHORIZATION}, None, 400, "E000020"),
    ({"Authorization": wsse.AUTHORIZATION, "X-WSSE": 'Username="x"'}, None, 400, "E000026"),
    ({"X-WSSE": wsse.x_wsse(HUAWEI_KEY, HUAWEI_SECRET)}, None, 400, "E000007"),
    ({**wsse_headers(), "Authorization": 'WSSE realm="SDP",profile="UsernameToken"'}, None,
     400, "E000005"),
    (wsse_headers(), b'{"to": "+8613800138000"}', 400, "E000040"),
    (wsse_headers(), {**FORM, "to": "+86 138"}, 400, "E000503"),
    (wsse_headers(), {**FORM, "to": "+86\N{FULLWIDTH DIGIT ONE}38"}, 400, "E000503"),
    (wsse_headers(), {**FORM, "templateParas": '["1234", ""]'}, 400, "E000503"),
])
async def test_huawei_refusals(huawei: EmulatorServer, headers: dict[str, str], data: Any,
                               status: int, code: str) -> None:
    if isinstance(data, bytes):
        headers = {**headers, "Content-Type": "application/json"}
    answer_status, content_type, body = await call_huawei(huawei, headers, data)
    assert (answer_status, body["code"]) == (status, code)
    assert content_type == "application/json;charset=UTF-8"
    assert "result" not in body
    assert huawei.state.counters["accepted"] == 0


# The admin routes, mounted on an app of their own as the gateway mounts them on its.

async def test_control_routes(aiohttp_client: AiohttpClient, aliyun: EmulatorServer,
                              huawei: EmulatorServer, session: aiohttp.ClientSession) -> None:
    app = web.Application()
    app.add_routes(control_routes({"aliyun": aliyun, "huawei": huawei}))
    admin = await aiohttp_client(app)
    overview = await (await admin.get("/_emulator")).json()
    assert overview["emulators"]["huawei"]["url"] == huawei.url
    assert overview["emulators"]["aliyun"]["mode"] == "ok"

    changed = await admin.post("/_emulator/aliyun", json={"mode": "fail", "latency_ms": 20})
    assert changed.status == 200
    assert (await changed.json())["mode"] == "fail"
    assert (aliyun.state.mode, aliyun.state.latency_ms) == ("fail", 20)
    assert (await (await admin.get("/_emulator/aliyun")).json())["latency_ms"] == 20

    bodies: list[Any] = [{"mode": "sideways"}, {"speed": 1}, [], {"latency_ms": -5}]
    for body in bodies:
        bad = await admin.post("/_emulator/aliyun", json=body)
        assert (bad.status, bad.content_type) == (400, "application/problem+json")
        assert "hang" in (await bad.json())["modes"]
    assert (await admin.post("/_emulator/aliyun", data=b"{",
                             headers={"Content-Type": "application/json"})).status == 400
    # a cross-site form post cannot flip a mode
    assert (await admin.post("/_emulator/aliyun", data={"mode": "down"})).status == 415
    assert (await admin.post("/_emulator/twilio", json={"mode": "ok"})).status == 400
    assert (await admin.get("/_emulator/twilio")).status == 404

    await client(huawei, session).send(message(), timeout=2)
    assert huawei.state.counters["accepted"] == 1
    reset = await (await admin.post("/_emulator/huawei/reset", json={})).json()
    assert reset["counters"]["accepted"] == reset["accepted_total"] == 0

    down = await admin.post("/_emulator/huawei", json={"mode": "down"})
    assert (await down.json())["mode"] == "down"
    assert (await client(huawei, session).send(message(), timeout=2)).delivery is Delivery.SAFE
    await admin.post("/_emulator/huawei", json={"mode": "ok"})
    assert (await client(huawei, session).send(message(), timeout=2)).delivery \
        is Delivery.ACCEPTED


async def test_control_routes_answer_deep_json_with_400(aiohttp_client: AiohttpClient,
                                                        aliyun: EmulatorServer) -> None:
    """JSON nested past the parser's recursion limit is a bad change, not a 500."""
    app = web.Application()
    app.add_routes(control_routes({"aliyun": aliyun}))
    admin = await aiohttp_client(app)
    deep = b"[" * 100_000 + b"]" * 100_000
    response = await admin.post("/_emulator/aliyun", data=deep,
                                headers={"Content-Type": "application/json"})
    assert (response.status, response.content_type) == (400, "application/problem+json")
    assert aliyun.state.mode == "ok"


async def test_cli_serves_until_sigterm(unused_tcp_port_factory: Callable[[], int]) -> None:
    port = unused_tcp_port_factory()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from gateway.emulators.cli import main; "
        "sys.exit(main(sys.argv[1:]))", "--port", "0", "--control-port", str(port),
        "--log-level", "WARNING", stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1])
    assert process.stdout is not None
    try:
        lines = [(await asyncio.wait_for(process.stdout.readline(), 10)).decode()
                 for _ in range(5)]
        assert lines[0].startswith("aliyun ") and "emulator-access-key-secret" in lines[0]
        assert lines[1].startswith("huawei ") and "csms12345678" in lines[1]
        assert lines[2].startswith("tencent ") and "1400006666" in lines[2]
        assert lines[3].startswith("twilio ") and "emulator-auth-token" in lines[3]
        assert f"http://127.0.0.1:{port}/_emulator" in lines[4]
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{port}/_emulator") as response:
            assert set((await response.json())["emulators"]) == {"aliyun", "huawei", "tencent",
                                                                 "twilio"}
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# Tencent: TC3 checks in the order of providers.md 3.7; every answer is HTTP 200.

TENCENT_ID = EMULATOR_CREDENTIALS["tencent"]["secret_id"]
TENCENT_KEY = EMULATOR_CREDENTIALS["tencent"]["secret_key"]
TENCENT_BODY = json.dumps({"PhoneNumberSet": ["+8613800138000"], "SmsSdkAppId": "1400006666",
                           "TemplateId": "1110", "TemplateParamSet": ["1234"],
                           "SessionContext": "ctx-1"}).encode()


def tencent_headers(server: EmulatorServer, body: bytes = TENCENT_BODY,
                    secret_id: str = TENCENT_ID, secret_key: str = TENCENT_KEY,
                    offset: int = 0) -> dict[str, str]:
    stamp = int(time.time()) + offset
    host = f"127.0.0.1:{server.port}"
    return {"Content-Type": "application/json", "Host": host, "X-TC-Action": "SendSms",
            "X-TC-Version": "2021-01-11", "X-TC-Timestamp": str(stamp),
            "Authorization": tencent.authorization(secret_id, secret_key, stamp,
                                                   "application/json", host, body)}


@pytest.mark.parametrize(("change", "code"), [
    ({"secret_key": "wrong"}, "AuthFailure.SignatureFailure"),
    ({"secret_id": "AKIDnobody"}, "AuthFailure.SecretIdNotFound"),
    ({"offset": -400}, "AuthFailure.SignatureExpire"),
    ({"body": b"{}"}, "AuthFailure.SignatureFailure"),  # signed another body than sent
])
async def test_tencent_refusals_are_http_200_with_response_error(
        start_emulator: Starter, change: dict[str, Any], code: str) -> None:
    server = await start_emulator("tencent")
    async with aiohttp.ClientSession() as http, http.post(
            server.url + "/", data=TENCENT_BODY,
            headers=tencent_headers(server, **change)) as response:
        assert (response.status, response.headers["Content-Type"]) == (200,
                                                                       "application/json")
        answer = (await response.json())["Response"]
    assert answer["Error"]["Code"] == code and answer["RequestId"]
    assert server.state.counters["auth_failures"] == 1


async def test_tencent_per_number_limit_inside_a_success(start_emulator: Starter) -> None:
    server = await start_emulator("tencent")
    body = TENCENT_BODY.replace(b'"+8613800138000"', b'"+8613800138000", "+8613800199915"')
    async with aiohttp.ClientSession() as http, http.post(
            server.url + "/", data=body, headers=tencent_headers(server, body)) as response:
        statuses = (await response.json())["Response"]["SendStatusSet"]
    assert [s["Code"] for s in statuses] == ["Ok", "LimitExceeded.PhoneNumberThirtySecondLimit"]
    assert server.state.accepted["ctx-1"] == 1


# Twilio: Basic auth, then the To/From/Body checks and the magic test numbers.

TWILIO_SID = EMULATOR_CREDENTIALS["twilio"]["account_sid"]
TWILIO_TOKEN = EMULATOR_CREDENTIALS["twilio"]["auth_token"]


async def call_twilio(server: EmulatorServer, form: dict[str, str], sid: str = TWILIO_SID,
                      token: str = TWILIO_TOKEN, path_sid: str | None = None,
                      ) -> tuple[int, dict[str, Any]]:
    url = server.url + twilio.messages_path(path_sid or sid)
    async with aiohttp.ClientSession() as http, http.post(
            url, data=form, headers={"Authorization": twilio.basic_auth(sid, token)}) as response:
        return response.status, await response.json()


TWILIO_FORM = {"To": "+14155552670", "From": "+15017122661", "Body": "Your code is 1"}


@pytest.mark.parametrize(("form", "auth", "status", "code"), [
    ({}, {"token": "wrong"}, 401, 20003),
    ({}, {"path_sid": "ACsomeoneelse"}, 401, 20003),
    ({"To": "4155552670"}, {}, 400, 21211),
    ({"To": "+15005550001"}, {}, 400, 21211),
    ({"To": "+15005550009"}, {}, 400, 21614),
    ({"To": "+15005550004"}, {}, 400, 21610),
    ({"From": ""}, {}, 400, 21603),
    ({"Body": "x" * 1601}, {}, 400, 21617),
])
async def test_twilio_refusals(start_emulator: Starter, form: dict[str, str],
                               auth: dict[str, str], status: int, code: int) -> None:
    server = await start_emulator("twilio")
    answer = await call_twilio(server, {**TWILIO_FORM, **form}, **auth)
    assert answer[0] == status
    assert answer[1]["code"] == code and answer[1]["status"] == status
    assert answer[1]["more_info"].endswith(str(code))
    assert server.state.counters["accepted"] == 0


async def test_twilio_created_message_shape(start_emulator: Starter) -> None:
    server = await start_emulator("twilio")
    status, message = await call_twilio(server, TWILIO_FORM)
    assert status == 201
    assert message["status"] == "queued" and message["sid"].startswith("SM")
    assert (message["num_segments"], message["num_media"]) == ("1", "0")
    await server.apply("throttle")
    status, answer = await call_twilio(server, TWILIO_FORM)
    assert (status, answer["code"]) == (429, 20429)
    assert server.state.counters["accepted"] == 1  # a 429 never creates a message


async def test_an_aliyun_receipt_push_is_tried_three_more_times_then_given_up(
        aiohttp_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    pushes: list[Any] = []

    async def refuse(request: web.Request) -> web.Response:
        pushes.append(await request.json())
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post("/receipts", refuse)
    receiver = await aiohttp_server(app)
    state = EmulatorState("aliyun")
    state.set_receipts("deliver", 0.01)  # tries after 0.1, 0.5 and 1.0 s (the floor: 0.1 s)
    sender = ReceiptSender(state, batched=True)
    report = {"phone_number": "13800138000", "success": True, "biz_id": "1", "out_id": "m1"}
    try:
        with caplog.at_level("WARNING"):
            sender.schedule(str(receiver.make_url("/receipts")), [report])
            for _ in range(300):
                if "given up" in caplog.text:
                    break
                await asyncio.sleep(0.01)
        assert pushes == [[report]] * 4
        assert (state.counters["receipt_failures"], state.counters["receipts"]) == (4, 0)
        assert "failed 4 times: given up" in caplog.text
    finally:
        await sender.close()
