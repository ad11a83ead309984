"""Huawei Cloud MSGSMS ``batchSendSms`` v1 with X-WSSE, sent with aiohttp."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from providers import wsse
from providers.base import Delivery, Health, Message, Provider, SendResult
from providers.http import WireResponse, exchange, retry_after

PATH = "/sms/batchSendSms/v1"

# Failover classes from providers.md section 2.4-2.5.
_DISABLE = frozenset({"E000102", "E000103", "E000106", "E000109", "E000111", "E000112",
                      "E000620", "E000623", "E000630"})
_CALLER = frozenset({"E000503"})
_STATUS_CALLER = frozenset({"E200028", "E200041"})
# "Too many messages to send" to a number: Huawei's per-recipient limit. Answered 429 like
# Aliyun's isv.BUSINESS_LIMIT_CONTROL; never failed over (that would defeat the limit).
_STATUS_LIMIT = frozenset({"E200015"})
_STATUS_CONFIG = frozenset({"E200029", "E200030", "E200031", "E200033"})


def _per_number(result: list[Any]) -> SendResult:
    items = [item for item in result if isinstance(item, dict)]
    statuses = [str(item.get("status", "")) for item in items]
    ok = [item for item, status in zip(items, statuses, strict=True) if status == "000000"]
    if ok:
        ids = ",".join(str(item.get("smsMsgId", "")) for item in ok) or None
        refused = tuple((str(item.get("originTo", "")), status)
                        for item, status in zip(items, statuses, strict=True)
                        if status != "000000")
        each = tuple((str(item.get("originTo", "")), str(item["smsMsgId"]))
                     for item in ok if item.get("smsMsgId"))
        return SendResult(Delivery.ACCEPTED, Health.SUCCESS, "", ids, refused=refused,
                          recipient_ids=each)
    if statuses and all(s in _STATUS_LIMIT for s in statuses):
        return SendResult(Delivery.RCPT_LIMIT, Health.IGNORED, statuses[0])
    if statuses and all(s in _STATUS_CALLER | _STATUS_LIMIT for s in statuses):
        return SendResult(Delivery.CALLER, Health.IGNORED, statuses[0])
    if statuses and all(s in _STATUS_CALLER | _STATUS_LIMIT | _STATUS_CONFIG for s in statuses):
        return SendResult(Delivery.SAFE, Health.FAILURE, statuses[0])
    return SendResult(Delivery.UNKNOWN, Health.FAILURE, statuses[0] if statuses else "E000510")


def classify(response: WireResponse, code: str) -> SendResult:
    """Translate a Huawei answer and its ``code`` into an outcome (providers.md 2.4-2.5)."""
    if response.status == 429:  # whatever code it carries
        wait = retry_after(response.headers)
        return SendResult(Delivery.SAFE, Health.THROTTLED, "HTTP 429", retry_after=wait)
    result = response.fields.get("result")
    if code in ("000000", "E000510") and isinstance(result, list):
        return _per_number(result)
    if code in _CALLER:
        return SendResult(Delivery.CALLER, Health.IGNORED, code)
    if code in _DISABLE:
        return SendResult(Delivery.SAFE, Health.DISABLED, code)
    if code == "E000000" or response.status >= 500 or response.status < 400:
        return SendResult(Delivery.UNKNOWN, Health.FAILURE, code)  # "System error": maybe sent
    return SendResult(Delivery.SAFE, Health.FAILURE, code)  # auth, header and format errors


class HuaweiProvider(Provider):
    """batchSendSms: form body, templateParas as a JSON list in the template's param order."""

    type_name = "huawei"
    credential_keys = ("app_key", "app_secret")
    required_options = ("sender",)
    optional_options = ("signature", "status_callback")
    default_endpoint = "https://smsapi.cn-north-4.myhuaweicloud.com:443"

    def form(self, message: Message) -> dict[str, str]:
        """The form fields, in the doc demo's order."""
        options = self.settings.options
        fields = {
            "from": str(options["sender"]),
            "to": ",".join(message.to),
            "templateId": self.template_id(message.template),
        }
        if message.params:
            fields["templateParas"] = json.dumps(message.ordered_params, ensure_ascii=False)
        if options.get("status_callback"):
            fields["statusCallback"] = str(options["status_callback"])
        if options.get("signature"):
            fields["signature"] = str(options["signature"])
        fields["extend"] = message.id
        return fields

    async def send(self, message: Message, timeout: float) -> SendResult:
        creds = self.settings.credentials
        headers = {
            "Authorization": wsse.AUTHORIZATION,
            "X-WSSE": wsse.x_wsse(creds["app_key"].reveal(), creds["app_secret"].reveal()),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        # Encoded here: aiohttp's FormData does the same urlencode at three times the cost.
        body = urlencode(self.form(message)).encode()
        return await exchange(self.session, "POST", f"{self.endpoint}{PATH}", timeout,
                              code="code", classify=classify, headers=headers, data=body)

    def describe(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "sender": self.settings.options.get("sender")}
