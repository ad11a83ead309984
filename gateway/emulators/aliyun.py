"""Aliyun Dysmsapi ``SendSms`` emulator: RPC v1 (or ACS3) signatures checked, Aliyun's answers.

Checks follow providers.md 1.9; error codes and messages are the POP gateway's (1.6).
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import random
import re
import time
import uuid
from base64 import b64encode
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from gateway.emulators.base import ProviderEmulator
from gateway.emulators.receipts import aliyun_report, now, outcomes
from gateway.emulators.state import EmulatorState, Refused, json_response, parse_utc
from providers import aliyun_sign

HOST_ID = "dysmsapi.aliyuncs.com"
WINDOW = 15 * 60  # both the allowed clock skew and how long a nonce stays used
ACS3 = "ACS3-HMAC-SHA256"
_NUMBER = re.compile(r"\+?[0-9]{5,20}")  # ASCII: \d also matches fullwidth digits
_SAMPLE = (b'{"Code": "OK", "Message": "OK", "BizId": "9006197469364984400^0", '
           b'"RequestId": "F655A8D5-B967-440B-8683-DAD6FF8D230E"}')
_MODE_ANSWERS: dict[str, tuple[int, str, str]] = {
    "fail": (200, "isp.SYSTEM_ERROR", "系统错误"),
    "reject": (200, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号"),
    "throttle": (400, "Throttling.User", "Request was denied due to user flow control."),
    "limit": (200, "isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1"),
    "disabled": (200, "isv.AMOUNT_NOT_ENOUGH", "账户余额不足"),
    "unknown_code": (200, "isv.SOMETHING_NEW", "An error code no client knows yet."),
}


def answer(status: int, code: str, message: str,
           headers: dict[str, str] | None = None) -> web.Response:
    """Aliyun's error shape; gateway (non-200) errors also carry HostId and Recommend."""
    payload: dict[str, Any] = {"RequestId": str(uuid.uuid4()).upper(), "Code": code,
                               "Message": message}
    if status != 200:
        payload |= {"HostId": HOST_ID, "Recommend":
                    f"https://api.aliyun.com/troubleshoot?q={code}&product=Dysmsapi"}
    return json_response(status, payload, headers)


def _refuse(status: int, code: str, message: str, counter: str = "auth_failures") -> Refused:
    return Refused(answer(status, code, message), counter)


class NonceCache:
    """Nonces seen within ``window`` seconds; older ones are dropped, so memory stays bounded."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._order: collections.deque[tuple[float, str]] = collections.deque()
        self._seen: set[str] = set()

    def use(self, nonce: str) -> bool:
        """Record ``nonce``; False when it was already used within the window."""
        now = time.monotonic()
        while self._order and now - self._order[0][0] > self.window:
            self._seen.discard(self._order.popleft()[1])
        if nonce in self._seen:
            return False
        self._seen.add(nonce)
        self._order.append((now, nonce))
        return True


def acs3_string_to_sign(method: str, query: Mapping[str, str], headers: Mapping[str, str],
                        signed_headers: Sequence[str], body: bytes) -> str:
    """ACS3 StringToSign (providers.md 1.4), rebuilt from the client's own SignedHeaders list."""
    canonical_headers = "".join(f"{name}:{headers.get(name, '').strip()}\n"
                                for name in signed_headers)
    canonical = "\n".join([method.upper(), "/", aliyun_sign.canonical_query(query),
                           canonical_headers, ";".join(signed_headers),
                           hashlib.sha256(body).hexdigest()])
    return f"{ACS3}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def _mismatch(server_string: str) -> Refused:
    # The old SDK compares Message.split(':')[1] with its own string: nothing before it may
    # contain a colon, and the v1 string has none (colons are encoded as %253A).
    return _refuse(400, "SignatureDoesNotMatch", "Specified signature is not matched with our "
                   f"calculation. server string to sign is:{server_string}")


@dataclass(frozen=True, slots=True)
class _Sms:
    numbers: list[str]
    template: str
    params: dict[str, str]
    out_id: str


class _Aliyun(ProviderEmulator[_Sms]):
    """The request handler; holds the credentials and the nonces seen."""

    key_names = ("access_key_id", "access_key_secret")
    sample = _SAMPLE
    routes = (("GET", "/"), ("POST", "/"))
    batched_receipts = True

    def __init__(self, state: EmulatorState, credentials: Mapping[str, str]) -> None:
        super().__init__(state, credentials)
        self.nonces = NonceCache(WINDOW)

    async def check(self, request: web.Request) -> _Sms:
        body = await request.read()  # cached by misbehave
        query = dict(parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True))
        form = (dict(parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
                if request.content_type == "application/x-www-form-urlencoded" else {})
        if request.headers.get("Authorization", "").startswith(ACS3):
            self._verify_acs3(request, query, body)
        else:
            self._verify_v1(request.method, query | form)
        return _validate(query | form)

    def mode_answer(self, mode: str, sms: _Sms) -> web.Response:
        status, code, message = _MODE_ANSWERS[mode]
        # x-acs-retry-after is what the new SDK reads (providers.md 1.5); real use unverified.
        headers = {"x-acs-retry-after": "2"} if mode == "throttle" else None
        return answer(status, code, message, headers)

    def accept(self, state: EmulatorState, sms: _Sms) -> web.Response:
        biz_id = f"{random.randrange(10**18, 10**19)}^0"
        state.record_accept(sms.out_id, sms.numbers, sms.template, sms.params, biz_id)
        self._receipts(state, sms, biz_id)
        return json_response(200, {"RequestId": str(uuid.uuid4()).upper(), "Message": "OK",
                                   "BizId": biz_id, "Code": "OK"})

    def _receipts(self, state: EmulatorState, sms: _Sms, biz_id: str) -> None:
        """SmsReport items to the console-configured URL (state.receipt_url), if any."""
        first, stale = outcomes(state.receipt_mode, sms.numbers)
        sent = now()
        at = sent + state.receipt_delay
        self.receipts.schedule(state.receipt_url, [
            aliyun_report(n, ok, biz_id, sms.out_id, sent, at) for n, ok in first])
        self.receipts.schedule(state.receipt_url, [
            aliyun_report(n, ok, biz_id, sms.out_id, sent, sent) for n, ok in stale],
            2 * state.receipt_delay)

    def _verify_v1(self, method: str, params: dict[str, str]) -> None:
        _check_api(params.get("Action"), params.get("Version"))
        for name in ("AccessKeyId", "Signature", "SignatureNonce", "Timestamp"):
            if not params.get(name):
                raise _refuse(400, f"Missing{name}", f"{name} is mandatory for this action.")
        secret = self._secret(params["AccessKeyId"])
        _check_time(params["Timestamp"])
        server_string = aliyun_sign.string_to_sign(method, params)
        digest = hmac.new(f"{secret}&".encode(), server_string.encode(), hashlib.sha1).digest()
        if not hmac.compare_digest(b64encode(digest).decode(), params["Signature"]):
            raise _mismatch(server_string)
        self._use_nonce(params["SignatureNonce"])

    def _verify_acs3(self, request: web.Request, query: dict[str, str], body: bytes) -> None:
        headers = request.headers
        _check_api(headers.get("x-acs-action"), headers.get("x-acs-version"))
        fields = dict(part.strip().split("=", 1) for part in
                      headers["Authorization"][len(ACS3):].split(",") if "=" in part)
        key, signed, given = (fields.get(n, "") for n in ("Credential", "SignedHeaders",
                                                           "Signature"))
        names = signed.split(";")
        present = {name.lower() for name in headers}
        present = {name for name in present if name == "host" or name.startswith("x-acs-")}
        if not (key and signed and given) or not present <= set(names):
            raise _refuse(400, "IncompleteSignature",
                          "The request signature does not conform to Aliyun standards.")
        secret = self._secret(key)
        _check_time(headers.get("x-acs-date", ""))
        if headers.get("x-acs-content-sha256") != hashlib.sha256(body).hexdigest():
            raise _refuse(400, "ContentSHA256NotMatch", "x-acs-content-sha256 does not match.")
        values = {name: ",".join(headers.getall(name, [])) for name in names}
        server_string = acs3_string_to_sign(request.method, query, values, names, body)
        expected = hmac.new(secret.encode(), server_string.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, given):
            raise _mismatch(server_string)
        self._use_nonce(headers.get("x-acs-signature-nonce", ""))

    def _secret(self, access_key_id: str) -> str:
        secret = self.secrets.get(access_key_id)
        if secret is None:
            raise _refuse(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        return secret

    def _use_nonce(self, nonce: str) -> None:
        if not nonce:
            raise _refuse(400, "MissingSignatureNonce",
                          "SignatureNonce is mandatory for this action.")
        if not self.nonces.use(nonce):
            raise _refuse(400, "SignatureNonceUsed", "Specified signature nonce was used already.")


def _check_api(action: str | None, version: str | None) -> None:
    for name, value, wanted in (("Action", action, "SendSms"), ("Version", version, "2017-05-25")):
        if value != wanted:
            raise _refuse(400, "InvalidParameter",
                          f'The specified parameter "{name}" is not valid.', "rejected")


def _check_time(value: str) -> None:
    when = parse_utc(value)
    if when is None:
        raise _refuse(400, "InvalidTimeStamp.Format",
                      "Specified time stamp or date value is not well formatted.")
    if abs(time.time() - when) > WINDOW:
        raise _refuse(400, "InvalidTimeStamp.Expired",
                      "Specified time stamp or date value is expired.")


def _validate(params: dict[str, str]) -> _Sms:
    for name in ("PhoneNumbers", "SignName", "TemplateCode"):
        if not params.get(name):
            raise _refuse(400, f"Missing{name}", f"{name} is mandatory for this action.",
                          "rejected")
    numbers = params["PhoneNumbers"].split(",")
    if len(numbers) > 1000:
        raise _refuse(200, "isv.MOBILE_COUNT_OVER_LIMIT", "手机号码数量超过限制", "rejected")
    if not all(_NUMBER.fullmatch(number) for number in numbers):
        raise _refuse(200, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号", "rejected")
    try:
        template_params = json.loads(params.get("TemplateParam") or "{}")
    except ValueError:
        template_params = None
    if not (isinstance(template_params, dict)
            and all(isinstance(v, str) for v in template_params.values())):
        raise _refuse(200, "isv.INVALID_JSON_PARAM",
                      "JSON参数不合法\N{FULLWIDTH COMMA}只接受字符串值", "rejected")
    return _Sms(numbers, params["TemplateCode"], template_params, params.get("OutId", ""))


def aliyun_app(state: EmulatorState, credentials: Mapping[str, str]) -> web.Application:
    """The Aliyun emulator: ``GET|POST /`` answering SendSms as Dysmsapi does."""
    return _Aliyun.app(state, credentials)
