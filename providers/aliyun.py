"""Aliyun Dysmsapi ``SendSms`` (2017-05-25), RPC v1 signature, sent with aiohttp."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import yarl

from providers import aliyun_sign
from providers.base import Delivery, Health, Message, Provider, SendResult
from providers.http import WireResponse, exchange, retry_after

# Failover classes from providers.md section 1.6.
_CALLER = frozenset({
    "isv.MOBILE_NUMBER_ILLEGAL", "isv.MOBILE_COUNT_OVER_LIMIT", "isv.DOMESTIC_NUMBER_NOT_SUPPORTED",
    "isv.TEMPLATE_MISSING_PARAMETERS", "isv.INVALID_JSON_PARAM", "isv.PARAM_LENGTH_LIMIT",
    "isv.PARAM_NOT_SUPPORT_URL", "isv.INVALID_PARAMETERS", "isv.SMS_CONTENT_ILLEGAL",
    "isv.BLACK_KEY_CONTROL_LIMIT",
})
_DISABLE = frozenset({
    "isv.DAY_LIMIT_CONTROL", "isv.MONTH_LIMIT_CONTROL", "isv.OUT_OF_SERVICE",
    "isv.AMOUNT_NOT_ENOUGH", "isv.PRODUCT_UN_SUBSCRIPT", "isv.PRODUCT_UNSUBSCRIBE",
    "isv.ACCOUNT_NOT_EXISTS", "isv.ACCOUNT_ABNORMAL", "isp.RAM_PERMISSION_DENY",
    "InvalidAccessKeyId.NotFound", "InvalidAccessKeyId.Inactive", "Forbidden.RAM",
})
_SAFE = frozenset({  # not sent, provider-side config or our request: fail over
    "isv.SMS_TEMPLATE_ILLEGAL", "isv.SMS_SIGNATURE_ILLEGAL", "isv.SMS_SIGNATURE_SCENE_ILLEGAL",
    "isv.SIGN_STATE_ILLEGAL", "isv.SMS_SIGN_ILLEGAL", "isv.EXTEND_CODE_ERROR", "isv.DENY_IP_RANGE",
    "SignatureDoesNotMatch", "IncompleteSignature", "InvalidTimeStamp.Expired",
    "InvalidTimeStamp.Format", "IllegalTimestamp", "MissingParameter", "InvalidParameter",
    "SignatureNonceUsed",  # our nonce is fresh per attempt, so the request was not processed
})
_LIMIT_WINDOWS = (("分钟级", 60.0), ("小时级", 3600.0), ("天级", 86400.0))


def classify(response: WireResponse, code: str) -> SendResult:
    """Translate an Aliyun answer and its ``Code`` into an outcome (providers.md 1.5-1.7)."""
    body = response.fields
    if code == "OK" and response.status == 200:
        biz_id = body.get("BizId")
        return SendResult.accepted(str(biz_id) if biz_id is not None else None)
    if code == "isv.BUSINESS_LIMIT_CONTROL":
        message = str(body.get("Message", ""))
        window = next((s for key, s in _LIMIT_WINDOWS if key in message), 60.0)
        return SendResult(Delivery.RCPT_LIMIT, Health.IGNORED, code, retry_after=window)
    if code in _CALLER:
        return SendResult(Delivery.CALLER, Health.IGNORED, code)
    if code in _DISABLE:
        return SendResult(Delivery.SAFE, Health.DISABLED, code)
    if code.startswith("Throttling"):
        wait = retry_after(response.headers, "x-acs-retry-after", "Retry-After")
        return SendResult(Delivery.SAFE, Health.THROTTLED, code, retry_after=wait)
    if code in _SAFE or (400 <= response.status < 500 and response.status != 408):
        return SendResult(Delivery.SAFE, Health.FAILURE, code)
    # isp.SYSTEM_ERROR, InternalError, ServiceUnavailable, and codes we do not know: maybe sent.
    return SendResult(Delivery.UNKNOWN, Health.FAILURE, code)


class AliyunProvider(Provider):
    """SendSms with params in the query and an empty body, as both official SDKs send it."""

    type_name = "aliyun"
    credential_keys = ("access_key_id", "access_key_secret")
    required_options = ("sign_name",)
    optional_options = ("region_id",)
    default_endpoint = "https://dysmsapi.aliyuncs.com"

    def params(self, message: Message, nonce: str, timestamp: str) -> dict[str, str]:
        """The signed request parameters, Signature excluded."""
        creds = self.settings.credentials
        return {
            "AccessKeyId": creds["access_key_id"].reveal(),
            "Action": "SendSms",
            "Format": "JSON",
            "OutId": message.id,
            # Mainland numbers may carry 86, international ones need the country code: E.164 sans +
            "PhoneNumbers": ",".join(n.lstrip("+") for n in message.to),
            "RegionId": str(self.settings.options.get("region_id", "cn-hangzhou")),
            "SignName": str(self.settings.options["sign_name"]),
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": nonce,
            "SignatureVersion": "1.0",
            "TemplateCode": self.template_id(message.template),
            "TemplateParam": json.dumps(dict(message.params), ensure_ascii=False,
                                        separators=(",", ":")),
            "Timestamp": timestamp,
            "Version": "2017-05-25",
        }

    async def send(self, message: Message, timeout: float) -> SendResult:
        params = self.params(message, uuid.uuid4().hex,
                             time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        secret = self.settings.credentials["access_key_secret"].reveal()
        query = aliyun_sign.signed_query("POST", params, secret)
        url = yarl.URL(f"{self.endpoint}/?{query}", encoded=True)
        # an empty body, as the SDKs send it
        return await exchange(self.session, "POST", url, timeout, code="Code", classify=classify)

    def describe(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "sign_name": self.settings.options.get("sign_name")}
