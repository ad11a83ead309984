"""Twilio Programmable Messaging ``Messages.json`` create, HTTP Basic auth, sent with aiohttp.

Twilio has no template ids: a provider's ``templates`` map each logical template to its text,
with ``{param}`` placeholders (``verify_code: "Your code is {code}"``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import yarl

from providers.base import Delivery, Health, Message, Provider, SendResult
from providers.http import WireResponse, exchange_with, retry_after

API_VERSION = "2010-04-01"
MAX_BODY = 1600

# Failover classes from providers.md section 4.3.
_CALLER = frozenset({21211, 21614, 21612, 21610, 21635, 21602, 21604, 21617})
_DISABLE = frozenset({20003})
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def messages_path(account_sid: str) -> str:
    """The create path for one account."""
    return f"/{API_VERSION}/Accounts/{account_sid}/Messages.json"


def basic_auth(account_sid: str, auth_token: str) -> str:
    """``Authorization: Basic base64(AccountSid:AuthToken)``."""
    return "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()


def webhook_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """``X-Twilio-Signature``: base64(HMAC-SHA1(token, url + sorted name+value pairs))."""
    payload = url + "".join(f"{name}{params[name]}" for name in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def render(text: str, params: Mapping[str, str]) -> str:
    """The template text with ``{name}`` replaced by its param; unknown names stay as written."""
    return _PLACEHOLDER.sub(lambda m: params.get(m.group(1), m.group(0)), text)


def classify(response: WireResponse) -> SendResult:
    """Translate a Twilio answer into an outcome (providers.md 4.2-4.3)."""
    body = response.document
    if response.status == 201 and isinstance(body, dict) and body.get("sid"):
        return SendResult.accepted(str(body["sid"]))
    code = body.get("code") if isinstance(body, dict) else None
    reason = f"{code}" if isinstance(code, int) else f"HTTP {response.status}"
    if code == 20429 or response.status == 429:
        # "never processed and is always safe to retry" (Twilio error 20429)
        return SendResult(Delivery.SAFE, Health.THROTTLED, reason,
                          retry_after=retry_after(response.headers))
    if code in _DISABLE or response.status == 401:
        return SendResult(Delivery.SAFE, Health.DISABLED, reason)
    if code in _CALLER:
        return SendResult(Delivery.CALLER, Health.IGNORED, reason)
    if 400 <= response.status < 500 and response.status != 408:
        # Validation on create happens before a message exists: 21408/21606/21608 (our
        # account's config) and codes we do not know yet are all safe to fail over.
        return SendResult(Delivery.SAFE, Health.FAILURE, reason)
    return SendResult(Delivery.UNKNOWN, Health.FAILURE, reason)  # 5xx, 2xx without a sid


def combine(numbers: tuple[str, ...], results: list[SendResult]) -> SendResult:
    """One outcome for a batch: accepted if any number was, the rest named as refused."""
    ok = [r for r in results if r.delivery is Delivery.ACCEPTED]
    if len(results) == 1:
        return results[0]
    if not ok:
        order = (Delivery.UNKNOWN, Delivery.SAFE, Delivery.CALLER, Delivery.RCPT_LIMIT)
        return min(results, key=lambda r: order.index(r.delivery))
    ids = ",".join(r.provider_message_id or "" for r in ok)
    refused = tuple((number, r.reason) for number, r in zip(numbers, results, strict=True)
                    if r.delivery is not Delivery.ACCEPTED)
    return SendResult(Delivery.ACCEPTED, Health.SUCCESS, "", ids, refused=refused)


class TwilioProvider(Provider):
    """Messages.json create; ``sender`` is a From number or a Messaging Service SID (MG...)."""

    type_name = "twilio"
    credential_keys = ("account_sid", "auth_token")
    required_options = ("sender",)
    optional_options = ("status_callback",)
    default_endpoint = "https://api.twilio.com"

    def form(self, message: Message, to: str) -> dict[str, str]:
        """The form fields for one recipient."""
        options = self.settings.options
        sender = str(options["sender"])
        fields = {"To": to, "Body": render(self.template_id(message.template), message.params)}
        fields["MessagingServiceSid" if sender.startswith("MG") else "From"] = sender
        callback = options.get("status_callback")
        if callback:  # our id rides in the callback URL: receipts find their message by it
            fields["StatusCallback"] = str(yarl.URL(str(callback)).update_query(id=message.id))
        return fields

    async def send(self, message: Message, timeout: float) -> SendResult:
        # One create per recipient (Twilio has no batch send), all within the one timeout.
        results = await asyncio.gather(*(self._send_one(message, to, timeout)
                                         for to in message.to))
        return combine(message.to, results)

    async def _send_one(self, message: Message, to: str, timeout: float) -> SendResult:
        creds = self.settings.credentials
        sid = creds["account_sid"].reveal()
        headers = {"Authorization": basic_auth(sid, creds["auth_token"].reveal()),
                   "Content-Type": "application/x-www-form-urlencoded",
                   "Accept": "application/json"}
        body = urlencode(self.form(message, to)).encode()
        return await exchange_with(self.session, "POST", f"{self.endpoint}{messages_path(sid)}",
                                   timeout, read=classify, headers=headers, data=body)

    def describe(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "sender": self.settings.options.get("sender")}
