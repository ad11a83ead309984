"""Tencent TC3 and Twilio signing against the published and SDK-captured vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import yarl

from providers import tencent, twilio
from providers.base import Message, ProviderSettings, Secret

# A verbatim copy of the shared vector file's tencent and twilio sets, kept in the repository so
# a fresh clone checks them too.
VECTORS: dict[str, Any] = json.loads(
    Path(__file__).with_name("vectors_tencent_twilio.json").read_text(encoding="utf-8"))
TENCENT: list[dict[str, Any]] = VECTORS["tencent"]
TWILIO: list[dict[str, Any]] = VECTORS["twilio"]


def _tc3_inputs(vector: dict[str, Any]) -> tuple[str, str, bytes, str]:
    inputs, expected = vector["inputs"], vector["expected"]
    content_type = inputs.get("content_type") or expected.get("headers", {}).get(
        "Content-Type", "application/json")
    host = inputs.get("host") or expected["headers"]["Host"]
    body = (inputs.get("payload") or inputs.get("body") or expected["body"]).encode()
    return content_type, host, body, inputs.get("service", "sms")


@pytest.mark.parametrize("vector", TENCENT, ids=[v["name"][:40] for v in TENCENT])
def test_tencent_tc3_vectors(vector: dict[str, Any]) -> None:
    inputs, expected = vector["inputs"], vector["expected"]
    content_type, host, body, service = _tc3_inputs(vector)
    canonical = tencent.canonical_request(content_type, host, body)
    assert canonical == expected["canonical_request"]
    if "string_to_sign" in expected:
        assert tencent.string_to_sign(inputs["timestamp"], canonical, service) \
            == expected["string_to_sign"]
    want = expected.get("authorization") or expected["headers"]["Authorization"]
    secret_id = inputs.get("secret_id") or want.split("Credential=")[1].split("/")[0]
    assert tencent.authorization(secret_id, inputs["secret_key"], inputs["timestamp"],
                                 content_type, host, body, service) == want


def test_tencent_body_and_headers_match_the_sdk_capture() -> None:
    vector = TENCENT[1]
    inputs, expected = vector["inputs"], vector["expected"]
    params = inputs["params"]
    settings = ProviderSettings(
        name="tc", type="tencent", endpoint="https://sms.tencentcloudapi.com",
        credentials={"secret_id": Secret(inputs["secret_id"]),
                     "secret_key": Secret(inputs["secret_key"])},
        templates={"verify_code": params["TemplateId"]},
        options={"sdk_app_id": params["SmsSdkAppId"], "sign_name": params["SignName"],
                 "region": inputs["region"]})
    provider = tencent.TencentProvider(settings, None)  # type: ignore[arg-type]
    message = Message(id=params["SessionContext"], to=tuple(params["PhoneNumberSet"]),
                      template="verify_code", params={"code": params["TemplateParamSet"][0]})
    body = provider.body(message)
    assert json.loads(body) == json.loads(expected["body"])
    assert b"\\u817e" in body  # non-ASCII escaped as the SDK does: the hash covers these bytes
    headers = provider.headers(expected["body"].encode(), inputs["timestamp"])
    for name in ("Authorization", "Content-Type", "Host", "X-TC-Action", "X-TC-Version",
                 "X-TC-Timestamp", "X-TC-Region"):
        assert headers[name] == expected["headers"][name]


@pytest.mark.parametrize("url", ["http://127.0.0.1:34875", "https://sms.tencentcloudapi.com",
                                 "https://sms.tencentcloudapi.com:443"])
def test_tencent_host_header_is_what_aiohttp_sends(url: str) -> None:
    assert tencent.host_header(yarl.URL(url)) == yarl.URL(url).host_port_subcomponent


@pytest.mark.parametrize("vector", TWILIO[:2], ids=["doc", "status-callback"])
def test_twilio_webhook_signature_vectors(vector: dict[str, Any]) -> None:
    inputs = vector["inputs"]
    params = inputs.get("params") or inputs["form"]
    assert twilio.webhook_signature(inputs["auth_token"], inputs["url"], params) \
        == vector["expected"]["signature"]


def test_twilio_create_matches_the_sdk_capture() -> None:
    inputs, expected = TWILIO[2]["inputs"], TWILIO[2]["expected"]
    assert twilio.basic_auth(inputs["account_sid"], inputs["auth_token"]) \
        == expected["authorization"]
    assert twilio.messages_path(inputs["account_sid"]) == expected["path"]
    settings = ProviderSettings(
        name="tw", type="twilio",
        credentials={"account_sid": Secret(inputs["account_sid"]),
                     "auth_token": Secret(inputs["auth_token"])},
        templates={"verify_code": "Your code is {code}"},
        options={"sender": inputs["from"], "status_callback": inputs["status_callback"]})
    provider = twilio.TwilioProvider(settings, None)  # type: ignore[arg-type]
    message = Message(id="m-1", to=(inputs["to"],), template="verify_code",
                      params={"code": "1234"})
    form = provider.form(message, inputs["to"])
    captured = dict(parse_qsl(expected["body"]))
    callback = yarl.URL(form.pop("StatusCallback"))
    assert callback.with_query(None) == yarl.URL(captured.pop("StatusCallback"))
    assert callback.query["id"] == "m-1"  # our id rides in the callback URL
    assert form == captured


def test_twilio_sender_may_be_a_messaging_service() -> None:
    settings = ProviderSettings(
        name="tw", type="twilio",
        credentials={"account_sid": Secret("AC1"), "auth_token": Secret("t")},
        templates={"verify_code": "{code} {missing}"}, options={"sender": "MG123"})
    provider = twilio.TwilioProvider(settings, None)  # type: ignore[arg-type]
    form = provider.form(Message("m", ("+15005550006",), "verify_code", {"code": "7"}),
                         "+15005550006")
    assert form == {"To": "+15005550006", "Body": "7 {missing}", "MessagingServiceSid": "MG123"}
