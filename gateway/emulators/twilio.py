"""Twilio ``Messages.json`` create emulator: Basic auth checked, Twilio's answers.

Checks follow providers.md 4.5. Twilio's own test numbers act as magic inputs here too:
+15005550001 is invalid (21211), +15005550009 cannot receive SMS (21614), +15005550004 has
opted out (21610).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from gateway.emulators.base import ProviderEmulator
from gateway.emulators.state import EmulatorState, Refused, json_response
from providers import twilio

ROUTE = "/2010-04-01/Accounts/{sid}/Messages.json"
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
MAGIC = {"+15005550001": 21211, "+15005550009": 21614, "+15005550004": 21610}
_MESSAGES = {
    20003: "Authenticate", 20429: "Too Many Requests", 20500: "Internal Server Error",
    21211: "The 'To' number is not a valid phone number.",
    21602: "Message body is required.", 21603: "The 'From' phone number is required.",
    21604: "A 'To' phone number is required.", 21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    21999: "An error code no client knows yet.",
}
_SAMPLE = (b'{"sid": "SM29f4c3b2a1e0d9c8b7a6f5e4d3c2b1a0", "status": "queued", '
           b'"to": "+15558675310", "error_code": null}')
# mode -> (HTTP status, Twilio code). Twilio has no per-recipient limit on create (carriers'
# 30xxx arrive in receipts): "limit" answers the nearest synchronous thing, the API's 429.
_MODE_ANSWERS: dict[str, tuple[int, int]] = {
    "fail": (500, 20500), "reject": (400, 21211), "throttle": (429, 20429),
    "limit": (429, 20429), "disabled": (401, 20003), "unknown_code": (400, 21999),
}


def answer(status: int, code: int) -> web.Response:
    """Twilio's legacy error shape: code, message, more_info, status."""
    headers = {"Retry-After": "2"} if status == 429 else None
    return json_response(status, {"code": code, "message": _MESSAGES[code],
                                  "more_info": f"https://www.twilio.com/docs/errors/{code}",
                                  "status": status}, headers)


def _refuse(status: int, code: int, counter: str = "rejected") -> Refused:
    return Refused(answer(status, code), counter)


@dataclass(frozen=True, slots=True)
class _Sms:
    account: str
    to: str
    sender: str
    body: str
    callback: str


class _Twilio(ProviderEmulator[_Sms]):
    """The request handler; holds AccountSid -> AuthToken."""

    key_names = ("account_sid", "auth_token")
    sample = _SAMPLE
    routes = (("POST", ROUTE),)

    async def check(self, request: web.Request) -> _Sms:
        account = request.match_info["sid"]
        self._authenticate(request.headers.get("Authorization", ""), account)
        if request.content_type != "application/x-www-form-urlencoded":
            raise _refuse(400, 21602)
        form = dict(parse_qsl((await request.read()).decode(errors="replace"),
                              keep_blank_values=True))
        return _validate(account, form)

    def _authenticate(self, header: str, account: str) -> None:
        scheme, _, encoded = header.partition(" ")
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user = password = ""
        secret = self.secrets.get(user)
        if scheme != "Basic" or secret is None or user != account \
                or not hmac.compare_digest(secret.encode(), password.encode()):
            raise _refuse(401, 20003, "auth_failures")

    def mode_answer(self, mode: str, sms: _Sms) -> web.Response:
        return answer(*_MODE_ANSWERS[mode])

    def accept(self, state: EmulatorState, sms: _Sms) -> web.Response:
        sid = f"SM{random.randrange(16**32):032x}"
        now = format_datetime(datetime.now(UTC))
        # Our id is whatever the caller put in the StatusCallback URL's ``id``.
        callback_id = dict(parse_qsl(sms.callback.partition("?")[2])).get("id", "")
        state.record_accept(callback_id, [sms.to], "", {"Body": sms.body}, sid)
        path = f"/2010-04-01/Accounts/{sms.account}/Messages/{sid}"
        message: dict[str, Any] = {
            "sid": sid, "date_created": now, "date_updated": now, "date_sent": None,
            "account_sid": sms.account, "to": sms.to, "from": sms.sender, "body": sms.body,
            "messaging_service_sid": None, "status": "queued",
            "num_segments": "1", "num_media": "0", "direction": "outbound-api",
            "api_version": "2010-04-01", "price": None, "price_unit": "USD",
            "error_code": None, "error_message": None, "uri": f"{path}.json",
            "subresource_uris": {"media": f"{path}/Media.json"},
        }
        return json_response(201, message)


def _validate(account: str, form: dict[str, str]) -> _Sms:
    to = form.get("To", "")
    if not to:
        raise _refuse(400, 21604)
    if not _E164.fullmatch(to) or MAGIC.get(to) == 21211:
        raise _refuse(400, 21211)
    if to in MAGIC:
        raise _refuse(400, MAGIC[to])
    sender = form.get("From") or form.get("MessagingServiceSid") or ""
    if not sender:
        raise _refuse(400, 21603)
    body = form.get("Body", "")
    if not body:
        raise _refuse(400, 21602)
    if len(body) > twilio.MAX_BODY:
        raise _refuse(400, 21617)
    return _Sms(account, to, sender, body, form.get("StatusCallback", ""))


def twilio_app(state: EmulatorState, credentials: Mapping[str, str]) -> web.Application:
    """The Twilio emulator: ``POST /2010-04-01/Accounts/{sid}/Messages.json``."""
    return _Twilio.app(state, credentials)
