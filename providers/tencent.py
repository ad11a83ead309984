"""Tencent Cloud SMS ``SendSms`` (2021-01-11), TC3-HMAC-SHA256, sent with aiohttp."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

import yarl

from providers.base import Delivery, Health, Message, Provider, SendResult
from providers.http import WireResponse, exchange_with, retry_after

ALGORITHM = "TC3-HMAC-SHA256"
SERVICE = "sms"
VERSION = "2021-01-11"
CONTENT_TYPE = "application/json"

# Failover classes from providers.md section 3.5.
_RCPT_LIMIT = {  # per-recipient policy: 429 to the caller, never failed over; value: its window
    "LimitExceeded.PhoneNumberThirtySecondLimit": 30.0,
    "LimitExceeded.PhoneNumberOneHourLimit": 3600.0,
    "LimitExceeded.PhoneNumberDailyLimit": 86400.0,
    "LimitExceeded.PhoneNumberSameContentDailyLimit": 86400.0,
    "LimitExceeded.DeliveryFrequencyLimit": 60.0,
}
_CALLER = frozenset({
    "LimitExceeded.PhoneNumberCountLimit",
    "FailedOperation.TemplateParamSetNotMatchApprovedTemplate",
    "InvalidParameterValue.TemplateParameterFormatError",
    "InvalidParameterValue.TemplateParameterLengthLimit",
    "InvalidParameterValue.ProhibitedUseUrlInTemplateParameter",
    "InvalidParameterValue.ContentLengthLimit", "InvalidParameterValue.IncorrectPhoneNumber",
    "FailedOperation.PhoneNumberParseFail", "MissingParameter.EmptyPhoneNumberSet",
    "UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber",
    "UnsupportedOperation.UnsupportedRegion", "FailedOperation.PhoneNumberInBlacklist",
    "FailedOperation.ContainSensitiveWord", "InvalidParameter.DirtyWordFound",
    "FailedOperation.MarketingSendTimeConstraint",
})
_DISABLE = frozenset({
    "AuthFailure.SecretIdNotFound", "AuthFailure.InvalidSecretId",
    "AuthFailure.UnauthorizedOperation",
    "LimitExceeded.AppDailyLimit", "LimitExceeded.AppMainlandChinaDailyLimit",
    "LimitExceeded.AppGlobalDailyLimit", "LimitExceeded.DailyLimit",
    "LimitExceeded.AppCountryOrRegionDailyLimit", "LimitExceeded.GlobalSmsSendingRateLimit",
    "FailedOperation.InsufficientBalanceInSmsPackage",
    "UnauthorizedOperation.ServiceSuspendDueToArrears", "UnauthorizedOperation.SdkAppIdIsDisabled",
    "UnauthorizedOperation.RequestPermissionDeny",
    "UnauthorizedOperation.RequestIpNotInWhitelist",
    "UnauthorizedOperation.SmsSdkAppIdVerifyFail",
    "UnauthorizedOperation.IndividualUserMarketingSmsPermissionDeny",
    "InvalidParameterValue.SdkAppIdNotExist", "InvalidParameter.AppidAndBizId",
})
_SAFE = frozenset({  # not sent: our signature, request or this provider's sign/template config
    "AuthFailure.SignatureFailure", "AuthFailure.SignatureExpire",
    "AuthFailure.InvalidAuthorization", "AuthFailure.TokenFailure",
    "FailedOperation.SignatureIncorrectOrUnapproved",
    "FailedOperation.TemplateIncorrectOrUnapproved",
    "UnsupportedOperation.ChineseMainlandTemplateToGlobalPhone",
    "UnsupportedOperation.GlobalTemplateToChineseMainlandPhone",
    "FailedOperation.FailResolvePacket", "FailedOperation.JsonParseFail",
    "InternalError.JsonParseFail", "InternalError.RequestTimeException",
})
_SAFE_PREFIXES = ("InvalidParameter", "MissingParameter")  # malformed request: our bug


def signing_key(secret_key: str, date: str, service: str = SERVICE) -> bytes:
    """kSigning: the HMAC chain "TC3"+SecretKey -> date -> service -> "tc3_request"."""
    key = hmac.new(f"TC3{secret_key}".encode(), date.encode(), hashlib.sha256).digest()
    key = hmac.new(key, service.encode(), hashlib.sha256).digest()
    return hmac.new(key, b"tc3_request", hashlib.sha256).digest()


def canonical_request(content_type: str, host: str, body: bytes) -> str:
    """The POST canonical request over ``content-type;host`` (providers.md 3.3 step 1)."""
    return (f"POST\n/\n\ncontent-type:{content_type.lower()}\nhost:{host.lower()}\n\n"
            f"content-type;host\n{hashlib.sha256(body).hexdigest()}")


def string_to_sign(timestamp: int, canonical: str, service: str = SERVICE) -> str:
    """TC3 StringToSign; the credential scope's date is the UTC date of ``timestamp``."""
    scope = f"{utc_date(timestamp)}/{service}/tc3_request"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"


def utc_date(timestamp: int) -> str:
    """``YYYY-MM-DD`` of a Unix timestamp, in UTC."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def authorization(secret_id: str, secret_key: str, timestamp: int, content_type: str,
                  host: str, body: bytes, service: str = SERVICE) -> str:
    """The ``Authorization`` header value for one request."""
    to_sign = string_to_sign(timestamp, canonical_request(content_type, host, body), service)
    date = utc_date(timestamp)
    signature = hmac.new(signing_key(secret_key, date, service), to_sign.encode(),
                         hashlib.sha256).hexdigest()
    return (f"{ALGORITHM} Credential={secret_id}/{date}/{service}/tc3_request, "
            f"SignedHeaders=content-type;host, Signature={signature}")


def host_header(url: yarl.URL) -> str:
    """What aiohttp sends as Host: the host, and the port unless it is the scheme's default."""
    host = url.raw_host or ""
    return host if url.is_default_port() else f"{host}:{url.port}"


def classify_code(code: str) -> SendResult:
    """One Tencent error code (whole-request or per-number) as an outcome."""
    if code in _RCPT_LIMIT:
        return SendResult(Delivery.RCPT_LIMIT, Health.IGNORED, code, retry_after=_RCPT_LIMIT[code])
    if code in _CALLER:
        return SendResult(Delivery.CALLER, Health.IGNORED, code)
    if code in _DISABLE:
        return SendResult(Delivery.SAFE, Health.DISABLED, code)
    if code.startswith("RequestLimitExceeded"):
        return SendResult(Delivery.SAFE, Health.THROTTLED, code)
    if code in _SAFE or code.startswith(_SAFE_PREFIXES):
        return SendResult(Delivery.SAFE, Health.FAILURE, code)
    # InternalError.*, FailedOperation.OtherError and codes we do not know: maybe sent.
    return SendResult(Delivery.UNKNOWN, Health.FAILURE, code)


def _per_number(items: list[Any]) -> SendResult:
    statuses = [item for item in items if isinstance(item, dict)]
    codes = [str(item.get("Code", "")) for item in statuses]
    ok = [item for item, code in zip(statuses, codes, strict=True) if code == "Ok"]
    if ok:
        ids = ",".join(str(item.get("SerialNo", "")) for item in ok) or None
        refused = tuple((str(item.get("PhoneNumber", "")), code)
                        for item, code in zip(statuses, codes, strict=True) if code != "Ok")
        return SendResult(Delivery.ACCEPTED, Health.SUCCESS, "", ids, refused=refused)
    if not codes:
        return SendResult(Delivery.UNKNOWN, Health.FAILURE, "empty SendStatusSet")
    results = [classify_code(code) for code in codes]
    # A mixed batch is as bad as its most uncertain number: unknown > safe > caller > limit.
    for delivery in (Delivery.UNKNOWN, Delivery.SAFE, Delivery.CALLER):
        worst = next((r for r in results if r.delivery is delivery), None)
        if worst is not None:
            return worst
    return results[0]


def classify(response: WireResponse) -> SendResult:
    """Translate a Tencent answer into an outcome (providers.md 3.4-3.5)."""
    body = response.document
    inner = body.get("Response") if isinstance(body, dict) else None
    if response.status != 200 or not isinstance(inner, dict):
        if response.status >= 500 or 200 <= response.status < 300:
            return SendResult(Delivery.UNKNOWN, Health.FAILURE,
                              f"HTTP {response.status}: no Response")
        return SendResult(Delivery.SAFE, Health.FAILURE, f"HTTP {response.status}")
    error = inner.get("Error")
    if isinstance(error, dict):
        result = classify_code(str(error.get("Code", "")))
        if result.health is Health.THROTTLED:
            return SendResult(result.delivery, result.health, result.reason,
                              retry_after=retry_after(response.headers))
        return result
    items = inner.get("SendStatusSet")
    if not isinstance(items, list):
        return SendResult(Delivery.UNKNOWN, Health.FAILURE, "no SendStatusSet")
    return _per_number(items)


class TencentProvider(Provider):
    """SendSms: a JSON body, params in the template's order, our id as SessionContext."""

    type_name = "tencent"
    credential_keys = ("secret_id", "secret_key")
    required_options = ("sdk_app_id",)
    optional_options = ("sign_name", "region")
    default_endpoint = "https://sms.tencentcloudapi.com"

    def body(self, message: Message) -> bytes:
        """The request body, as the SDK serialises it (non-ASCII escaped)."""
        options = self.settings.options
        fields: dict[str, Any] = {
            "PhoneNumberSet": list(message.to),
            "SmsSdkAppId": str(options["sdk_app_id"]),
            "TemplateId": self.template_id(message.template),
            "TemplateParamSet": message.ordered_params,
            "SessionContext": message.id,
        }
        if options.get("sign_name"):
            fields["SignName"] = str(options["sign_name"])
        return json.dumps(fields).encode()

    def headers(self, body: bytes, timestamp: int) -> dict[str, str]:
        """Signed headers for ``body`` sent at ``timestamp``."""
        creds = self.settings.credentials
        url = yarl.URL(self.endpoint or "")
        host = host_header(url)
        return {
            "Authorization": authorization(creds["secret_id"].reveal(),
                                           creds["secret_key"].reveal(), timestamp,
                                           CONTENT_TYPE, host, body),
            "Content-Type": CONTENT_TYPE,
            "Host": host,
            "X-TC-Action": "SendSms",
            "X-TC-Version": VERSION,
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Region": str(self.settings.options.get("region", "ap-guangzhou")),
        }

    async def send(self, message: Message, timeout: float) -> SendResult:
        body = self.body(message)
        headers = self.headers(body, int(time.time()))
        return await exchange_with(self.session, "POST", f"{self.endpoint}/", timeout,
                                   read=classify, headers=headers, data=body)

    def describe(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "sdk_app_id": self.settings.options.get("sdk_app_id")}
