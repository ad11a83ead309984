"""Tencent Cloud SMS ``SendSms`` (2021-01-11) emulator: TC3 checked, Tencent's answers.

Checks follow providers.md 3.7. Everything is HTTP 200 with ``Content-Type: application/json``
exactly (the Python SDK ignores ``Response.Error`` under any other content type).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.emulators.base import ProviderEmulator
from gateway.emulators.state import EmulatorState, Refused
from providers import tencent

SKEW = 300
MAX_NUMBERS = 200
# A number ending so has hit its 30-second limit: per-number LimitExceeded, the rest goes out.
LIMITED_SUFFIX = "99915"
_NUMBER = re.compile(r"\+?[0-9]{5,20}")
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/(\d{4}-\d\d-\d\d)/(\w+)/tc3_request")
_SIGNATURE = re.compile(r"Signature=([0-9a-f]{64})")
_SAMPLE = (b'{"Response": {"SendStatusSet": [{"SerialNo": "5000:1045710669157053657849499619", '
           b'"PhoneNumber": "+8618511122233", "Fee": 1, "Code": "Ok"}], '
           b'"RequestId": "a0aabda6-cf91-4f3e-a81f-9198114a2279"}}')
# mode -> (a whole-request error rather than a per-number code?, the code, its message)
_MODE_ANSWERS: dict[str, tuple[bool, str, str]] = {
    "fail": (True, "InternalError.Timeout", "请求下发短信超时"),
    "reject": (False, "InvalidParameterValue.IncorrectPhoneNumber", "手机号格式错误"),
    "throttle": (True, "RequestLimitExceeded", "请求的次数超过了频率限制。"),
    "limit": (False, "LimitExceeded.PhoneNumberThirtySecondLimit",
              "单个手机号30秒内下发短信条数超过设定的上限"),
    "disabled": (True, "FailedOperation.InsufficientBalanceInSmsPackage", "套餐包余量不足"),
    "unknown_code": (True, "FailedOperation.SomethingNew", "An error code no client knows yet."),
}


def respond(inner: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    """``{"Response": {..., "RequestId"}}`` with HTTP 200 and the exact content type."""
    body = json.dumps({"Response": {**inner, "RequestId": str(uuid.uuid4())}},
                      ensure_ascii=False).encode()
    return web.Response(status=200, body=body,
                        headers={"Content-Type": "application/json", **(headers or {})})


def error(code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """A whole-request error: still HTTP 200."""
    return respond({"Error": {"Code": code, "Message": message}}, headers)


def _refuse(code: str, message: str, counter: str = "auth_failures") -> Refused:
    return Refused(error(code, message), counter)


@dataclass(frozen=True, slots=True)
class _Sms:
    numbers: list[str]
    template: str
    params: list[str]
    session: str


class _Tencent(ProviderEmulator[_Sms]):
    """The request handler; holds SecretId -> SecretKey."""

    key_names = ("secret_id", "secret_key")
    sample = _SAMPLE
    routes = (("POST", "/"),)

    async def check(self, request: web.Request) -> _Sms:
        headers = request.headers
        for name in ("X-TC-Action", "X-TC-Version", "X-TC-Timestamp", "Authorization"):
            if not headers.get(name):
                raise _refuse("MissingParameter", f"The request is missing {name}.", "rejected")
        if (headers["X-TC-Action"], headers["X-TC-Version"]) != ("SendSms", tencent.VERSION):
            raise _refuse("InvalidAction", "The action or version is not valid.", "rejected")
        body = await request.read()
        self._verify(request, body)
        return _validate(body)

    def _verify(self, request: web.Request, body: bytes) -> None:
        headers = request.headers
        authorization = headers["Authorization"]
        credential, signature = _CREDENTIAL.search(authorization), _SIGNATURE.search(authorization)
        if not (authorization.startswith(tencent.ALGORITHM) and credential and signature
                and "SignedHeaders=content-type;host" in authorization):
            raise _refuse("AuthFailure.InvalidAuthorization", "Authorization is malformed.")
        secret_id, date, service = credential.groups()
        secret = self.secrets.get(secret_id)
        if secret is None:
            raise _refuse("AuthFailure.SecretIdNotFound", "The SecretId is not found.")
        try:
            timestamp = int(headers["X-TC-Timestamp"])
        except ValueError:
            raise _refuse("AuthFailure.SignatureExpire", "The timestamp is invalid.") from None
        if abs(time.time() - timestamp) > SKEW or date != tencent.utc_date(timestamp):
            raise _refuse("AuthFailure.SignatureExpire", "Signature expired: the timestamp "
                          "differs from server time by more than 5 minutes.")
        # Rebuilt here from the raw body and the headers as received, not with the client's
        # own helper beyond the documented recipe, so a client bug cannot verify itself.
        canonical = tencent.canonical_request(headers.get("Content-Type", ""),
                                              headers.get("Host", ""), body)
        to_sign = tencent.string_to_sign(timestamp, canonical, service)
        expected = hmac.new(tencent.signing_key(secret, date, service), to_sign.encode(),
                            hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.group(1)):
            raise _refuse("AuthFailure.SignatureFailure", "The provided credentials could not "
                          "be validated. Please check your signature is correct.")

    def mode_answer(self, mode: str, sms: _Sms) -> web.Response:
        whole, code, message = _MODE_ANSWERS[mode]
        if whole:
            return error(code, message, {"Retry-After": "2"} if mode == "throttle" else None)
        return respond({"SendStatusSet": [_status(number, sms.session, code, message)
                                          for number in sms.numbers]})

    def accept(self, state: EmulatorState, sms: _Sms) -> web.Response:
        items = [_status(number, sms.session) for number in sms.numbers]
        sent = [item for item in items if item["Code"] == "Ok"]
        if sent:
            state.record_accept(sms.session, [item["PhoneNumber"] for item in sent],
                                sms.template, sms.params,
                                ",".join(item["SerialNo"] for item in sent))
        else:
            state.counters["rejected"] += 1
        return respond({"SendStatusSet": items})


def _status(number: str, session: str, code: str | None = None,
            message: str = "send success") -> dict[str, Any]:
    if code is None and number.endswith(LIMITED_SUFFIX):
        code, message = _MODE_ANSWERS["limit"][1:]
    return {"SerialNo": f"5000:{random.randrange(10**27, 10**28)}", "PhoneNumber": number,
            "Fee": 1, "SessionContext": session, "Code": code or "Ok", "Message": message,
            "IsoCode": "CN" if number.startswith("+86") else "DEF"}


def _validate(body: bytes) -> _Sms:
    try:
        fields = json.loads(body)
    except (ValueError, RecursionError):
        fields = None
    if not isinstance(fields, dict):
        raise _refuse("FailedOperation.JsonParseFail", "The request body is not JSON.",
                      "rejected")
    numbers = fields.get("PhoneNumberSet")
    if not isinstance(numbers, list) or not numbers:
        raise _refuse("MissingParameter.EmptyPhoneNumberSet", "PhoneNumberSet is empty.",
                      "rejected")
    if len(numbers) > MAX_NUMBERS:
        raise _refuse("LimitExceeded.PhoneNumberCountLimit", "More than 200 numbers.",
                      "rejected")
    if not all(isinstance(n, str) and _NUMBER.fullmatch(n) for n in numbers):
        raise _refuse("InvalidParameterValue.IncorrectPhoneNumber", "手机号格式错误", "rejected")
    params = fields.get("TemplateParamSet", [])
    for name in ("SmsSdkAppId", "TemplateId"):
        if not isinstance(fields.get(name), str) or not fields[name]:
            raise _refuse("MissingParameter", f"The request is missing {name}.", "rejected")
    if not (isinstance(params, list) and all(isinstance(p, str) for p in params)):
        raise _refuse("InvalidParameterValue.TemplateParameterFormatError",
                      "TemplateParamSet must be a list of strings.", "rejected")
    return _Sms(numbers, fields["TemplateId"], params, str(fields.get("SessionContext", "")))


def tencent_app(state: EmulatorState, credentials: Mapping[str, str]) -> web.Application:
    """The Tencent emulator: ``POST /`` answering SendSms as sms.tencentcloudapi.com does."""
    return _Tencent.app(state, credentials)
