"""``type: http``: the README's two examples, run as written against small local fakes."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config import ConfigError, parse_config
from gateway.emulators import EMULATOR_CREDENTIALS, EmulatorServer
from providers.base import Delivery, Health, Message, Provider
from providers.generic_http import GenericHttpProvider
from providers.http import make_session

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
HEADER = "templates:\n  verify_code: {params: [code]}\nproviders:\n"


def example(kind: str) -> str:
    """The README's ``# example: kind`` YAML block."""
    match = re.search(rf"```yaml\n# example: {kind}\n(.*?)```", README, re.S)
    assert match, f"README has no '# example: {kind}' block"
    return match.group(1)


def load(block: str, endpoint: str, real: str, session: aiohttp.ClientSession) -> Provider:
    """Build the provider the block describes, its real host swapped for a local fake."""
    assert real in block
    text = HEADER + textwrap.indent(block.replace(real, endpoint), "  ")
    config = parse_config(text, "README.md")
    provider = config.providers[0]
    return provider.cls(provider.settings, session)


def message(to: str = "+14155552670", code: str = "123456") -> Message:
    return Message(id="msg-1 a&b=c", to=(to,), template="verify_code", params={"code": code})


# The JSON fake: an imaginary "Acme" API. The recipient's last digit picks the answer.
ACME_ANSWERS: dict[str, tuple[int, str]] = {
    "1": (400, "INVALID_NUMBER"), "2": (429, "RATE_LIMITED"), "3": (429, "TOO_MANY_FOR_NUMBER"),
    "4": (402, "NO_CREDIT"), "5": (500, "INTERNAL"), "6": (400, "SOMETHING_NEW"),
}


@pytest.fixture
async def acme() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    async def messages(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer acme-test-token":
            return web.json_response({"error": {"code": "BAD_KEY"}}, status=401)
        body = await request.json()
        received.append(body)
        status, code = ACME_ANSWERS.get(body["to"][-1], (200, ""))
        if status == 200:
            return web.json_response({"id": f"acme-{len(received)}", "status": "queued"})
        headers = {"Retry-After": "7"} if code == "RATE_LIMITED" else None
        return web.json_response({"error": {"code": code}}, status=status, headers=headers)

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    async with TestServer(app) as server:
        yield str(server.make_url("")).rstrip("/"), received


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with make_session() as client_session:
        yield client_session


ACME = "https://api.acme.example"


async def test_json_example_accepts_and_sends_values_as_json_strings(
        acme: tuple[str, list[dict[str, Any]]], session: aiohttp.ClientSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, received = acme
    monkeypatch.setenv("ACME_TOKEN", "acme-test-token")
    provider = load(example("json"), url, ACME, session)
    hostile = '1", "to": "+10000000000'  # cannot add a member: it is one JSON string
    result = await provider.send(message(code=hostile), timeout=5)
    assert (result.delivery, result.provider_message_id) == (Delivery.ACCEPTED, "acme-1")
    assert received == [{"to": "+14155552670", "template": "otp-v1",
                         "params": {"code": hostile}, "reference": "msg-1 a&b=c"}]


@pytest.mark.parametrize(("digit", "delivery", "health", "retry_after"), [
    ("1", Delivery.CALLER, Health.IGNORED, None),
    ("2", Delivery.SAFE, Health.THROTTLED, 7.0),
    ("3", Delivery.RCPT_LIMIT, Health.IGNORED, None),
    ("4", Delivery.SAFE, Health.DISABLED, None),
    ("5", Delivery.UNKNOWN, Health.FAILURE, None),
    ("6", Delivery.SAFE, Health.FAILURE, None),  # an unmapped code on a 4xx: not sent
])
async def test_json_example_maps_error_codes(
        acme: tuple[str, list[dict[str, Any]]], session: aiohttp.ClientSession,
        monkeypatch: pytest.MonkeyPatch, digit: str, delivery: Delivery, health: Health,
        retry_after: float | None) -> None:
    monkeypatch.setenv("ACME_TOKEN", "acme-test-token")
    provider = load(example("json"), acme[0], ACME, session)
    result = await provider.send(message(to=f"+1415555267{digit}"), timeout=5)
    assert (result.delivery, result.health, result.retry_after) == (delivery, health,
                                                                    retry_after), result
    assert result.reason == ACME_ANSWERS[digit][1]


async def test_json_example_with_a_wrong_token_disables(
        acme: tuple[str, list[dict[str, Any]]], session: aiohttp.ClientSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_TOKEN", "wrong")
    provider = load(example("json"), acme[0], ACME, session)
    result = await provider.send(message(), timeout=5)
    assert (result.delivery, result.health, result.reason) == (Delivery.SAFE, Health.DISABLED,
                                                               "BAD_KEY")


async def test_form_example_speaks_twilio_to_its_emulator(
        session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = EMULATOR_CREDENTIALS["twilio"]
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", creds["account_sid"])
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", creds["auth_token"])
    emulator = EmulatorServer("twilio")
    await emulator.start()
    try:
        provider = load(example("form"), emulator.url, "https://api.twilio.com", session)
        sms = message()
        result = await provider.send(sms, timeout=5)
        assert result.delivery is Delivery.ACCEPTED
        assert result.provider_message_id == emulator.state.messages[-1]["provider_message_id"]
        assert emulator.state.accepted[sms.id] == 1  # the id survived the callback URL
        assert emulator.state.messages[-1]["params"] == {"Body": "Your code is 123456"}
        invalid = await provider.send(message(to="+15005550001"), timeout=5)  # magic: 21211
        assert (invalid.delivery, invalid.reason) == (Delivery.CALLER, "21211")
    finally:
        await emulator.stop()


BASE = """\
- name: h
  type: http
  endpoint: {endpoint}
  body: {{n: "{{{{ to }}}}"}}
"""


@pytest.mark.parametrize(("extra", "words"), [
    ("  format: xml\n", "providers.h.format: must be one of: json, form"),
    ("  method: DELETE\n", "providers.h.method: must be one of"),
    ("  errors: {X: maybe}\n", "providers.h.errors.X: unknown class 'maybe'"),
    ("  headers: {A: '{{ to '}\n", "providers.h.headers: template error"),
    ("  success: {status: [abc]}\n", "providers.h.success.status: must be a list"),
])
def test_bad_options_are_config_errors_with_lines(extra: str, words: str) -> None:
    text = HEADER + textwrap.indent(BASE.format(endpoint="http://x") + extra, "  ")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    assert any(words in str(p) and p.line > 0 for p in info.value.problems), info.value


def test_a_form_body_must_be_flat() -> None:
    block = BASE.format(endpoint="http://x").replace('{n: "{{ to }}"}', "{n: {m: x}}")
    with pytest.raises(ConfigError, match=r"providers\.h\.body: a form body is flat"):
        parse_config(HEADER + textwrap.indent(block + "  format: form\n", "  "), "c.yaml")
    parse_config(HEADER + textwrap.indent(block, "  "), "c.yaml")  # nested JSON is fine


async def test_templates_are_sandboxed_and_escaped_for_their_context(
        acme: tuple[str, list[dict[str, Any]]], session: aiohttp.ClientSession) -> None:
    url = acme[0]
    text = HEADER + textwrap.indent(BASE.format(endpoint=url + "/v1/{{ to }}") + (
        "  headers: {X-Code: '{{ params.code }}'}\n"), "  ")
    config = parse_config(text)
    provider = config.providers[0].cls(config.providers[0].settings, session)
    assert isinstance(provider, GenericHttpProvider)
    url_only, _headers, _body = provider.request(message(to="+1/../admin?x#"))
    assert url_only.endswith("/v1/%2B1%2F..%2Fadmin%3Fx%23")
    injected = await provider.send(message(code="1\r\nX-Evil: 1"), timeout=5)
    # nothing left the gateway: another provider may send it, this one's breaker is not charged
    assert (injected.delivery, injected.health) == (Delivery.NOT_SENT, Health.IGNORED)
    assert injected.reason.startswith("not sent: template")
    escape = HEADER + textwrap.indent(BASE.format(endpoint=url).replace(
        "{{ to }}", "{{ ''.__class__.__mro__[1].__subclasses__() }}"), "  ")
    config = parse_config(escape)
    sandboxed = config.providers[0].cls(config.providers[0].settings, session)
    result = await sandboxed.send(message(), timeout=5)
    assert (result.delivery, result.reason) == (Delivery.NOT_SENT,
                                                "not sent: template: SecurityError")
    assert acme[1] == []  # nothing reached the API
    assert json.dumps(provider.describe())  # describe() is JSON-safe and names no env value
