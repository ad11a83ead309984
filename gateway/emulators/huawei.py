"""Huawei Cloud MSGSMS ``batchSendSms`` v1 emulator: X-WSSE checked, Huawei's answers.

Checks run in the order of providers.md 2.8; codes and HTTP statuses come from 2.5.
"""

from __future__ import annotations

import base64
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
from urllib.parse import parse_qsl

from aiohttp import web

from gateway.emulators.base import ProviderEmulator
from gateway.emulators.receipts import huawei_report, now, outcomes
from gateway.emulators.state import EmulatorState, Refused, json_response, parse_utc, utc_now
from providers import wsse

PATH = "/sms/batchSendSms/v1"
# A number ending so has had too many messages today: per-number status E200015, while the rest
# of its batch goes out (a magic number, as Twilio's test credentials have).
LIMITED_SUFFIX = "99915"
SKEW = 24 * 3600
MAX_NUMBERS = 500
_TO = re.compile(r"[0-9+,]+")
_SAMPLE = (b'{"code": "000000", "description": "Success", "result": [{"originTo": '
           b'"+8613800138000", "createTime": "2018-08-06T11:59:50Z", "from": "csms12345678", '
           b'"smsMsgId": "4b4b34e7-1a9e-42ac-b309-d10997148905_85496076", "status": "000000"}]}')
# Only the range E000001-E000008 is documented for the Authorization header; this split of the
# codes over the individual checks is our reconstruction, in the order the checks run.
_AUTHORIZATION_CHECKS = (
    ("realm", "SDP", "E000001", "E000002"),
    ("profile", "UsernameToken", "E000003", "E000004"),
    ("type", "Appkey", "E000005", "E000006"),
)
_WSSE_FIELDS = (("Username", "E000021"), ("Nonce", "E000022"), ("Created", "E000023"),
                ("PasswordDigest", "E000024"))
_MODE_ANSWERS: dict[str, tuple[int, str, str]] = {
    "fail": (400, "E000000", "System error."),
    "reject": (400, "E000503", "Parameter format error."),
    # Huawei documents no API-throttling code: 429 + Retry-After is this emulator's invention,
    # shaped like Twilio's 20429, so clients can be tested against an explicit back-off.
    "throttle": (429, "E000429", "Too many requests."),
    "limit": (400, "E000510", "The SMS fails to be sent. For details, see status."),
    "disabled": (401, "E000112", "The subscriber status is frozen."),
    "unknown_code": (200, "E999999", "A result code no client knows yet."),
}


def answer(status: int, code: str, description: str, **extra: Any) -> web.Response:
    """Huawei's response shape: one ``code`` and ``description``, plus extra members."""
    headers = {"Retry-After": "2"} if status == 429 else None
    return json_response(status, {"code": code, "description": description, **extra}, headers)


def _refuse(status: int, code: str, description: str, counter: str = "auth_failures") -> Refused:
    return Refused(answer(status, code, description), counter)


@dataclass(frozen=True, slots=True)
class _Sms:
    sender: str
    numbers: list[str]
    template: str
    params: list[str]
    extend: str
    status_callback: str = ""


class _Huawei(ProviderEmulator[_Sms]):
    """The request handler; holds the app_key -> app_secret table."""

    key_names = ("app_key", "app_secret")
    sample = _SAMPLE
    routes = (("POST", PATH),)

    async def check(self, request: web.Request) -> _Sms:
        if request.content_type != "application/x-www-form-urlencoded":
            raise _refuse(400, "E000040",
                          "Content-Type must be application/x-www-form-urlencoded.", "rejected")
        _check_authorization(request.headers.get("Authorization"))
        self._check_wsse(request.headers.get("X-WSSE"))
        body = (await request.read()).decode(errors="replace")
        return _validate(dict(parse_qsl(body, keep_blank_values=True)))

    def mode_answer(self, mode: str, sms: _Sms) -> web.Response:
        status, code, description = _MODE_ANSWERS[mode]
        if mode == "limit":  # E200015: too many messages for this number (providers.md 2.4)
            return answer(status, code, description, result=_result(sms, "E200015"))
        return answer(status, code, description)

    def accept(self, state: EmulatorState, sms: _Sms) -> web.Response:
        result = _result(sms)
        sent = [item for item in result if item["status"] == "000000"]
        if not sent:  # every number refused: E000510, "see status" (providers.md 2.5)
            state.counters["rejected"] += 1
            return answer(400, "E000510", "The SMS fails to be sent. For details, see status.",
                          result=result)
        ids = ",".join(item["smsMsgId"] for item in sent)
        state.record_accept(sms.extend, [item["originTo"] for item in sent], sms.template,
                            sms.params, ids)
        if sms.status_callback:
            state.messages[-1]["status_callback"] = sms.status_callback
        self._receipts(state, sms, sent)
        return answer(200, "000000", "Success", result=result)

    def _receipts(self, state: EmulatorState, sms: _Sms, sent: list[dict[str, str]]) -> None:
        """One statusCallback form per number sent, to the send's statusCallback (else the
        emulator's receipt_url: Huawei's console-configured URL, kept to one format here)."""
        url = sms.status_callback or state.receipt_url
        ids = {item["originTo"]: item["smsMsgId"] for item in sent}
        first, stale = outcomes(state.receipt_mode, list(ids))
        sent_at = now()
        self.receipts.schedule(url, [
            huawei_report(ids[n], ok, sms.extend, sent_at + state.receipt_delay)
            for n, ok in first])
        self.receipts.schedule(url, [huawei_report(ids[n], ok, sms.extend, sent_at)
                                     for n, ok in stale], 2 * state.receipt_delay)

    def _check_wsse(self, header: str | None) -> None:
        if not header:
            raise _refuse(400, "E000020", "X-WSSE is missing.")
        token = wsse.parse_x_wsse(header)
        if token is None:
            raise _refuse(400, "E000026", "UsernameToken is missing.")
        for name, code in _WSSE_FIELDS:
            if not token.get(name):
                raise _refuse(400, code, f"{name} is missing from X-WSSE.")
        secret = self.secrets.get(token["Username"])
        if secret is None:
            raise _refuse(401, "E000102", "Invalid app_key.")
        created = parse_utc(token["Created"])
        if created is None:
            raise _refuse(400, "E000025", "Created format is incorrect.")
        if abs(time.time() - created) > SKEW:
            raise _refuse(401, "E000110", "Time out of limit.")
        # Computed here rather than with providers.wsse, so a client bug cannot verify itself.
        hexdigest = hashlib.sha256(
            (token["Nonce"] + token["Created"] + secret).encode()).hexdigest()
        expected = base64.b64encode(hexdigest.encode()).decode()
        if not hmac.compare_digest(expected, token["PasswordDigest"]):
            raise _refuse(401, "E000101", "Authentication failed.")


def _check_authorization(header: str | None) -> None:
    if header is None:
        raise _refuse(400, "E000007", "Authorization is missing.")
    scheme, _, rest = header.strip().partition(" ")
    if scheme != "WSSE":
        raise _refuse(400, "E000008", "WSSE is not contained in Authorization.")
    params = wsse.quoted_fields(rest)
    for name, wanted, missing, wrong in _AUTHORIZATION_CHECKS:
        if name not in params:
            raise _refuse(400, missing, f"{name} is missing from Authorization.")
        if params[name] != wanted:
            raise _refuse(400, wrong, f'{name} must be "{wanted}".')


def _validate(form: dict[str, str]) -> _Sms:
    to = form.get("to", "")
    numbers = to.split(",")
    if not _TO.fullmatch(to) or len(numbers) > MAX_NUMBERS \
            or not all(0 < len(number) <= 21 for number in numbers):
        raise _refuse(400, "E000503", "Parameter format error: to.", "rejected")
    for name in ("from", "templateId"):
        if not form.get(name):
            raise _refuse(400, "E000503", f"Parameter format error: {name}.", "rejected")
    try:
        params = json.loads(form.get("templateParas") or "[]")
    except ValueError:
        params = None
    if not (isinstance(params, list) and all(isinstance(p, str) and p for p in params)):
        raise _refuse(400, "E000503", "Parameter format error: templateParas.", "rejected")
    return _Sms(form["from"], numbers, form["templateId"], params, form.get("extend", ""),
                form.get("statusCallback", ""))


def _result(sms: _Sms, status: str | None = None) -> list[dict[str, str]]:
    """One item per number; without ``status``, each number's own (see LIMITED_SUFFIX)."""
    created = utc_now()
    return [{"originTo": number, "createTime": created, "from": sms.sender,
             "smsMsgId": f"{uuid.uuid4()}_{random.randrange(10**7, 10**8)}",
             "status": status or ("E200015" if number.endswith(LIMITED_SUFFIX) else "000000")}
            for number in sms.numbers]


def huawei_app(state: EmulatorState, credentials: Mapping[str, str]) -> web.Application:
    """The Huawei emulator: ``POST /sms/batchSendSms/v1`` as MSGSMS answers it."""
    return _Huawei.app(state, credentials)
