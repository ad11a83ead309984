"""Receipts set-up (SPEC §9): the ``receipts`` config section, Huawei's statusCallback, the
token kept secret, the emulators' receipt controls, and ``sms-gateway --emulate`` delivering
receipts to itself (what ``make run`` shows)."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gatewayproc import ROOT, running, until

from bench.configs import provider, render
from conftest import TEST_CONFIG, build_config
from gateway.config import ConfigError, parse_config
from gateway.emulators.receipts import aliyun_report, huawei_report, outcomes
from gateway.logs import MaskingFormatter
from gateway.receipt_wire import parse_aliyun, parse_huawei

TOKEN = "setup-receipt-token-0123456789"
CALLBACK = f"https://sms.example.com/receipts/huawei/{TOKEN}"


def with_receipts(**block: Any) -> str:
    return TEST_CONFIG + render({"receipts": block})


def env() -> dict[str, str]:
    return {"ALIYUN_ACCESS_KEY_ID": "a", "ALIYUN_ACCESS_KEY_SECRET": "b",
            "ALIYUN_SIGN_NAME": "c", "HUAWEI_APP_KEY": "d", "HUAWEI_APP_SECRET": "e",
            "HUAWEI_SENDER": "f"}


def test_huawei_sends_carry_status_callback_when_public_url_is_set() -> None:
    config = parse_config(with_receipts(token=TOKEN, public_url="https://sms.example.com/"),
                          env=env())
    huawei = config.provider("huawei")
    assert huawei is not None and huawei.settings.options["status_callback"] == CALLBACK
    assert config.receipts.url("aliyun") == f"https://sms.example.com/receipts/aliyun/{TOKEN}"
    assert TOKEN not in repr(config.receipts)
    no_public = parse_config(with_receipts(token=TOKEN), env=env())
    assert "status_callback" not in no_public.provider("huawei").settings.options  # type: ignore[union-attr]
    own = build_config(providers=[provider("huawei", status_callback="https://mine.example/cb")])
    kept = parse_config(own + render({"receipts": {"token": TOKEN,
                                                   "public_url": "https://x.example"}}), env=env())
    mine = kept.provider("huawei")
    assert mine is not None
    assert mine.settings.options["status_callback"] == "https://mine.example/cb"


@pytest.mark.parametrize(("block", "key", "words"), [
    ({"token": "short"}, "receipts.token", "16-128"),
    ({"token": "x" * 20 + "/../"}, "receipts.token", "16-128"),
    ({"public_url": "https://sms.example.com"}, "receipts.public_url", "set receipts.token"),
    ({"token": TOKEN, "public_url": "ftp://x"}, "receipts.public_url", "http"),
    ({"token": TOKEN, "colour": "red"}, "receipts.colour", "unknown key"),
])
def test_a_wrong_receipts_section_is_a_config_error(block: dict[str, str], key: str,
                                                    words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(with_receipts(**block), env=env())
    problems = [p for p in caught.value.problems if p.key == key]
    assert problems and words in problems[0].message
    assert "short" not in str(caught.value)  # the token's value is never quoted


def test_an_unset_token_variable_turns_receipts_off() -> None:
    config = parse_config(with_receipts(token="${SMS_GATEWAY_RECEIPT_TOKEN:-}"), env=env())
    assert config.receipts.token is None and config.receipts.url("huawei") is None


def test_log_lines_never_carry_the_token() -> None:
    record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1,
                               "Error handling request POST /receipts/huawei/%s HTTP/1.1",
                               (TOKEN,), None)
    line = MaskingFormatter("%(message)s").format(record)
    assert TOKEN not in line and "/receipts/huawei/***" in line


def test_emulator_receipts_use_the_providers_field_names() -> None:
    report = aliyun_report("+8613800138000", True, "900619746936498^0", "our-id", 1.8e9, 1.8e9)
    assert set(report) == {"phone_number", "send_time", "report_time", "success", "err_code",
                           "err_msg", "sms_size", "biz_id", "out_id"}
    assert report["phone_number"] == "13800138000" and report["sms_size"] == "1"
    [parsed], unknown = parse_aliyun(json.dumps([report]).encode(), now=1.8e9 + 60)
    assert (parsed.delivered, parsed.message_id, parsed.at, unknown) == (True, "our-id", 1.8e9,
                                                                         set())
    form = huawei_report("2ea20735-f856_11840135", False, "our-id", 1.8e9)
    assert form["status"] == "RTE_ERR" and form["orgCode"] == "E200027"
    body = "&".join(f"{k}={v}" for k, v in form.items()).encode()
    read, unknown = parse_huawei(body, now=1.8e9)
    assert (read.delivered, read.code, read.provider_message_id, read.message_id) == (
        False, "E200027", "2ea20735-f856_11840135", "our-id")
    assert outcomes("late", ["1", "299916"]) == ([("1", True), ("299916", False)],
                                                  [("1", False), ("299916", True)])
    assert outcomes("none", ["1"]) == ([], [])


async def test_receipt_modes_are_set_through_the_control_api(make_gateway: Any) -> None:
    gw = await make_gateway(with_receipts(token=TOKEN))
    url = "/_emulator/aliyun"
    changed = await gw.client.post(url, json={"receipt_mode": "duplicate", "receipt_delay": 0.5})
    assert changed.status == 200
    shown = await changed.json()
    assert (shown["receipt_mode"], shown["receipt_delay"]) == ("duplicate", 0.5)
    hook = await gw.client.post(url, json={"receipt_url": "http://127.0.0.1:9/r"})
    assert hook.status == 200 and gw.emulators["aliyun"].state.receipt_url == \
        "http://127.0.0.1:9/r"
    assert "127.0.0.1:9" not in await hook.text()  # the URL may carry a token: never shown
    for bad in ({"receipt_mode": "sideways"}, {"receipt_delay": -1},
                {"receipt_delay": True}, {"mode": "fail", "receipt_mode": "nope"},
                {"receipt_url": "file:///etc/passwd"}, {"receipt_url": 5}):
        refused = await gw.client.post(url, json=bad)
        assert refused.status == 400, bad
        assert "receipt_modes" in await refused.json()
    state = gw.emulators["aliyun"].state
    assert (state.mode, state.receipt_mode, state.receipt_delay) == ("ok", "duplicate", 0.5)


async def test_emulate_delivers_receipts_to_itself(tmp_path: Path) -> None:
    """``make run``: the shipped config under --emulate; both providers' receipts arrive."""
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    async with running(tmp_path / "config.yaml", "--emulate", console=tmp_path / "out.log",
                       cwd=tmp_path) as gw, aiohttp.ClientSession() as session:
        control = {"receipt_delay": 0.1}
        for kind in ("aliyun", "huawei"):
            async with session.post(f"{gw.url}/_emulator/{kind}", json=control) as r:
                assert r.status == 200
        ids = []
        for forced in (False, True):  # aliyun, then huawei (aliyun forced open)
            if forced:
                async with session.post(f"{gw.url}/admin/providers/aliyun/open", json={}) as r:
                    assert r.status == 200
            async with session.post(f"{gw.url}/sms", json={  # a number each: shipped limits
                    "to": [f"+86138001380{int(forced):02d}"], "template": "verify_code",
                    "params": {"code": "1234"}}) as r:
                assert r.status == 200
                ids.append((await r.json())["id"])
        done: dict[str, str] = {}

        async def check() -> None:
            for message_id in ids:
                async with session.get(f"{gw.url}/sms/{message_id}") as r:
                    done[message_id] = (await r.json())["status"]

        for _ in range(200):
            await check()
            if set(done.values()) == {"delivered"}:
                break
            await asyncio.sleep(0.05)
        assert list(done.values()) == ["delivered", "delivered"]
        async with session.get(f"{gw.url}/status") as r:
            status = await r.json()
        ratios = {p["name"]: p["receipts"]["ratio"] for p in status["providers"]}
        assert ratios["aliyun"] == 1.0 and ratios["huawei"] == 1.0
        async with session.get(f"{gw.url}/") as r:
            page = await r.text()
        assert 'data-testid="ratio-aliyun"' in page and "<svg" in page
    await until(lambda: "stopped" in (tmp_path / "out.log").read_text())
    log = (tmp_path / "out.log").read_text() + (tmp_path / "logs" / "gateway.log").read_text()
    assert "/receipts/" not in log or "/receipts/aliyun/***" in log


async def test_receipt_routes_take_forms_but_not_a_foreign_origin(make_gateway: Any) -> None:
    gw = await make_gateway(with_receipts(token=TOKEN))
    form = {"smsMsgId": "nobody", "status": "DELIVRD"}
    plain = await gw.client.post(f"/receipts/huawei/{TOKEN}", data=form)
    assert plain.status == 200  # a form post, no API key: how Huawei calls
    foreign = await gw.client.post(f"/receipts/huawei/{TOKEN}", data=form,
                                   headers={"Origin": "https://evil.example"})
    assert foreign.status == 403  # a browser on some page: never a provider
    admin = await gw.client.post("/admin/providers/aliyun/open", data=form)
    assert admin.status == 415  # the JSON rule still holds everywhere else


async def test_the_openapi_document_describes_the_receipt_routes(make_gateway: Any) -> None:
    gw = await make_gateway(with_receipts(token=TOKEN))
    doc = await (await gw.client.get("/openapi.json")).json()
    aliyun = doc["paths"]["/receipts/aliyun/{token}"]["post"]
    assert set(aliyun["responses"]) == {"200", "400", "404", "413", "503"}
    assert "application/x-www-form-urlencoded" in \
        doc["paths"]["/receipts/huawei/{token}"]["post"]["requestBody"]["content"]
    assert TOKEN not in json.dumps(doc)
