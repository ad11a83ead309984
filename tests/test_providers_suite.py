"""One suite for every provider type: accepted, each error class, timeouts, garbage, signatures.

Every type in the registry is listed in TYPES; adding a provider means adding it here (the first
test fails until it is). Wire types run against the bundled emulators over real sockets; ``http``
is the generic provider configured in YAML terms to speak Twilio's API to the Twilio emulator.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from gateway.emulators import EMULATOR_CREDENTIALS, EMULATOR_OPTIONS, EmulatorServer
from providers import REGISTRY
from providers.base import Delivery, Health, Message, Provider, ProviderSettings, Secret
from providers.http import make_session

TYPES = ("aliyun", "huawei", "tencent", "twilio", "http", "sandbox")
WIRE_TYPES = TYPES[:-1]  # sandbox sends nothing: only "accepted" applies to it
EMULATOR_OF = {"aliyun": "aliyun", "huawei": "huawei", "tencent": "tencent", "twilio": "twilio",
               "http": "twilio"}
TEMPLATE_IDS = {"aliyun": "SMS_154950909", "huawei": "8ff55eac", "tencent": "1110",
                "twilio": "Your code is {code}"}
SECRET_KEY = {"aliyun": "access_key_secret", "huawei": "app_secret", "tencent": "secret_key",
              "twilio": "auth_token"}
TWILIO = EMULATOR_CREDENTIALS["twilio"]

_ids = itertools.count(1)


def http_options(token_env: str) -> dict[str, Any]:
    """The generic provider speaking Twilio: the README's form-API example, in test form."""
    return {
        "format": "form",
        "headers": {"Authorization":
                    f"Basic {{{{ (env.SUITE_TWILIO_SID ~ ':' ~ env.{token_env}) | b64encode }}}}"},
        "body": {"To": "{{ to }}", "From": "+15017122661",
                 "Body": "Your code is {{ params.code }}",
                 "StatusCallback": "http://127.0.0.1:8080/r?id={{ message_id | urlencode }}"},
        "success": {"status": [201], "field": "status", "equals": "queued"},
        "message_id": "sid",
        "error_code": "code",
        "errors": {20429: "throttled", 20003: "disabled", 21211: "caller", 21610: "caller",
                   21614: "caller", 20500: "unknown"},
    }


def build(kind: str, url: str, session: aiohttp.ClientSession, *,
          wrong_secret: bool = False) -> Provider:
    """A provider of ``kind`` pointed at ``url`` with the emulator's credentials."""
    if kind == "http":
        settings = ProviderSettings(
            name="http", type="http",
            endpoint=f"{url}/2010-04-01/Accounts/{{{{ env.SUITE_TWILIO_SID }}}}/Messages.json",
            options=http_options("SUITE_WRONG_TOKEN" if wrong_secret else "SUITE_TWILIO_TOKEN"))
        return REGISTRY["http"](settings, session)
    if kind == "sandbox":
        return REGISTRY["sandbox"](ProviderSettings(name="box", type="sandbox"), session)
    credentials = dict(EMULATOR_CREDENTIALS[kind])
    if wrong_secret:
        credentials[SECRET_KEY[kind]] = "not-the-secret"
    settings = ProviderSettings(
        name=kind, type=kind, endpoint=url,
        credentials={k: Secret(v) for k, v in credentials.items()},
        templates={"verify_code": TEMPLATE_IDS[kind]}, options=EMULATOR_OPTIONS[kind])
    return REGISTRY[kind](settings, session)


def message(to: str = "+8613800138000") -> Message:
    return Message(id=f"suite-{next(_ids)} a*b~c", to=(to,), template="verify_code",
                   params={"code": "123456"})


Factory = Callable[..., Awaitable[tuple[Provider, EmulatorServer | None]]]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with make_session() as client_session:
        yield client_session


@pytest.fixture
async def provider_for(session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
                       ) -> AsyncIterator[Factory]:
    """Build a provider of a type, with its emulator started (None for sandbox)."""
    monkeypatch.setenv("SUITE_TWILIO_SID", TWILIO["account_sid"])
    monkeypatch.setenv("SUITE_TWILIO_TOKEN", TWILIO["auth_token"])
    monkeypatch.setenv("SUITE_WRONG_TOKEN", "not-the-token")
    started: list[EmulatorServer] = []

    async def make(kind: str, mode: str = "ok", *, wrong_secret: bool = False,
                   ) -> tuple[Provider, EmulatorServer | None]:
        if kind == "sandbox":
            return build(kind, "", session), None
        emulator = EmulatorServer(EMULATOR_OF[kind])
        await emulator.start()
        started.append(emulator)
        await emulator.apply(mode)
        return build(kind, emulator.url, session, wrong_secret=wrong_secret), emulator

    yield make
    for emulator in started:
        await emulator.stop()


def test_every_registered_type_is_in_the_suite() -> None:
    assert set(TYPES) == set(REGISTRY)


@pytest.mark.parametrize("kind", TYPES)
async def test_accepted(kind: str, provider_for: Factory) -> None:
    provider, emulator = await provider_for(kind)
    sms = message("+15558675310" if EMULATOR_OF.get(kind) == "twilio" else "+8613800138000")
    result = await provider.send(sms, timeout=5)
    assert (result.delivery, result.health) == (Delivery.ACCEPTED, Health.SUCCESS), result
    assert result.provider_message_id
    if emulator is not None:  # the provider echoes our id where the emulator records it
        assert emulator.state.accepted[sms.id] == 1
        assert emulator.state.messages[-1]["provider_message_id"] == result.provider_message_id


_U, _S, _C, _R = Delivery.UNKNOWN, Delivery.SAFE, Delivery.CALLER, Delivery.RCPT_LIMIT
_F, _I, _T, _D = Health.FAILURE, Health.IGNORED, Health.THROTTLED, Health.DISABLED
_TWILIO_LIKE = {"fail": (_U, _F, "20500", None), "reject": (_C, _I, "21211", None),
                "throttle": (_S, _T, "20429", 2.0), "limit": (_S, _T, "20429", 2.0),
                "disabled": (_S, _D, "20003", None), "unknown_code": (_S, _F, "21999", None)}
# type -> emulator mode -> (delivery, health, reason contains, retry_after)
ERROR_CLASSES: dict[str, dict[str, tuple[Delivery, Health, str, float | None]]] = {
    "aliyun": {"fail": (_U, _F, "isp.SYSTEM_ERROR", None),
               "reject": (_C, _I, "isv.MOBILE_NUMBER_ILLEGAL", None),
               "throttle": (_S, _T, "Throttling.User", 2.0),
               "limit": (_R, _I, "isv.BUSINESS_LIMIT_CONTROL", 60.0),
               "disabled": (_S, _D, "isv.AMOUNT_NOT_ENOUGH", None),
               "unknown_code": (_U, _F, "isv.SOMETHING_NEW", None)},
    "huawei": {"fail": (_U, _F, "E000000", None), "reject": (_C, _I, "E000503", None),
               "throttle": (_S, _T, "HTTP 429", 2.0), "limit": (_R, _I, "E200015", None),
               "disabled": (_S, _D, "E000112", None), "unknown_code": (_U, _F, "E999999", None)},
    "tencent": {"fail": (_U, _F, "InternalError.Timeout", None),
                "reject": (_C, _I, "InvalidParameterValue.IncorrectPhoneNumber", None),
                "throttle": (_S, _T, "RequestLimitExceeded", 2.0),
                "limit": (_R, _I, "LimitExceeded.PhoneNumberThirtySecondLimit", 30.0),
                "disabled": (_S, _D, "FailedOperation.InsufficientBalanceInSmsPackage", None),
                "unknown_code": (_U, _F, "FailedOperation.SomethingNew", None)},
    "twilio": _TWILIO_LIKE,
    "http": _TWILIO_LIKE,
}
ERROR_CASES = [pytest.param(kind, mode, id=f"{kind}-{mode}")
               for kind in WIRE_TYPES for mode in ERROR_CLASSES[kind]]


@pytest.mark.parametrize(("kind", "mode"), ERROR_CASES)
async def test_error_class(kind: str, mode: str, provider_for: Factory) -> None:
    provider, emulator = await provider_for(kind, mode)
    assert emulator is not None
    result = await provider.send(message("+15558675310"), timeout=5)
    delivery, health, reason, retry_after = ERROR_CLASSES[kind][mode]
    assert (result.delivery, result.health, result.retry_after) == (
        delivery, health, retry_after), result
    assert reason in result.reason
    assert emulator.state.counters["accepted"] == 0


# mode -> (reason contains, timeout): below the protocol, the same for every wire type.
FAULTS = {"garbage": ("HTTP 200", 5.0), "html": ("HTTP 502", 5.0), "huge": ("too large", 5.0),
          "reset": ("connection lost", 5.0), "hang": ("timeout", 0.3), "drip": ("timeout", 0.5)}


@pytest.mark.parametrize("mode", FAULTS)
@pytest.mark.parametrize("kind", WIRE_TYPES)
async def test_timeouts_and_garbage_may_have_been_sent(kind: str, mode: str,
                                                       provider_for: Factory) -> None:
    provider, _emulator = await provider_for(kind, mode)
    reason, timeout = FAULTS[mode]
    result = await provider.send(message("+15558675310"), timeout=timeout)
    assert (result.delivery, result.health) == (Delivery.UNKNOWN, Health.FAILURE), result
    assert reason in result.reason


@pytest.mark.parametrize("kind", WIRE_TYPES)
async def test_down_is_safe_to_fail_over(kind: str, provider_for: Factory) -> None:
    provider, _emulator = await provider_for(kind, "down")
    result = await provider.send(message("+15558675310"), timeout=5)
    assert (result.delivery, result.health) == (Delivery.SAFE, Health.FAILURE), result
    assert "connect failed" in result.reason


# A wrong secret: refused before anything is sent. Twilio's 20003 also covers a suspended
# account, so it disables; the signature schemes' mismatch codes only say "this request".
WRONG_SECRET = {"aliyun": _F, "huawei": _F, "tencent": _F, "twilio": _D, "http": _D}


@pytest.mark.parametrize("kind", WIRE_TYPES)
async def test_wrong_secret_is_refused_by_the_signature_check(kind: str,
                                                              provider_for: Factory) -> None:
    provider, emulator = await provider_for(kind, wrong_secret=True)
    assert emulator is not None
    result = await provider.send(message("+15558675310"), timeout=5)
    assert (result.delivery, result.health) == (Delivery.SAFE, WRONG_SECRET[kind]), result
    assert emulator.state.counters["auth_failures"] == 1
    assert emulator.state.counters["accepted"] == 0
