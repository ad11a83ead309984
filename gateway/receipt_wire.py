"""Receipts as the providers push them, read into :class:`DeliveryReport`s (providers.md §1.8,
§2.7). Everything here is untrusted input: each field is checked for type, size and sense, and
anything wrong is a :class:`BadReceipt` naming what (never echoing a number)."""

from __future__ import annotations

import functools
import json
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl

from gateway.store import DeliveryReport

MAX_BODY = 1024 * 1024  # one push
MAX_REPORTS = 1000  # reports in one Aliyun push
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
FUTURE_SLACK = 86400.0  # a report time this far ahead of our clock is not believed
BEIJING = timezone(timedelta(hours=8))  # Aliyun's report times (providers.md §1.8)
_ALIYUN_FIELDS = frozenset({"phone_number", "send_time", "report_time", "success", "err_code",
                            "err_msg", "sms_size", "biz_id", "out_id"})
_HUAWEI_FIELDS = frozenset({"smsMsgId", "total", "sequence", "status", "statusDesc", "source",
                            "updateTime", "orgCode", "extend"})
DELIVERED_HUAWEI = "DELIVRD"


class BadReceipt(ValueError):
    """A push that is not a receipt we can read; the message says why."""


def parse_aliyun(body: bytes, now: float | None = None) -> tuple[list[DeliveryReport], set[str]]:
    """An SmsReport push: a JSON array of reports. The reports, and the unknown field names
    seen (kept, not refused: Aliyun adding a field must not cost every receipt)."""
    try:
        items = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadReceipt("the body is not JSON") from None
    if not isinstance(items, list):
        raise BadReceipt("the body is not a JSON array of reports")
    if len(items) > MAX_REPORTS:
        raise BadReceipt(f"more than {MAX_REPORTS} reports in one push")
    reports, unknown = [], set()
    clock = time.time() if now is None else now
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadReceipt(f"report {index} is not an object")
        unknown |= {str(k)[:40] for k in item if k not in _ALIYUN_FIELDS}
        try:
            reports.append(_aliyun_report(item, clock))
        except BadReceipt as exc:
            raise BadReceipt(f"report {index}: {exc}") from None
    return reports, unknown


def _aliyun_report(item: Mapping[str, Any], now: float) -> DeliveryReport:
    success = item.get("success")
    if not isinstance(success, bool):
        raise BadReceipt("success must be true or false")
    number = _text(item, "phone_number", 32, required=True)
    if not number or not any(c.isdigit() for c in number):
        raise BadReceipt("phone_number is not a number")
    out_id, biz_id = _text(item, "out_id", 64), _text(item, "biz_id", 255)
    if not out_id and not biz_id:
        raise BadReceipt("neither out_id nor biz_id: nothing to match it by")
    code = _text(item, "err_code", 64) or ("DELIVERED" if success else "UNKNOWN")
    when = _beijing(_text(item, "report_time", 32) or _text(item, "send_time", 32), now)
    return DeliveryReport("aliyun", success, code, when, out_id or None, number, biz_id or None)


def parse_huawei(body: bytes, now: float | None = None) -> tuple[DeliveryReport, set[str]]:
    """A statusCallback push: form fields of one report (one recipient, one part)."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text),
                          max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise BadReceipt("the body is not a URL-encoded form") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise BadReceipt(f"{key[:40]} given twice")
        form[key] = value
    unknown = {k[:40] for k in form if k not in _HUAWEI_FIELDS}
    status = _text(form, "status", 64, required=True)
    sms_id = _text(form, "smsMsgId", 255, required=True)
    extend = _text(form, "extend", 128)
    updated = _text(form, "updateTime", 32)
    clock = time.time() if now is None else now
    when = _utc(updated, clock) if updated else clock
    code = _text(form, "orgCode", 64) if status != DELIVERED_HUAWEI else ""
    return DeliveryReport("huawei", status == DELIVERED_HUAWEI, code or status, when,
                          extend or None, None, sms_id), unknown


def _text(item: Mapping[str, Any], name: str, limit: int, *, required: bool = False) -> str:
    value = item.get(name)
    if value is None or value == "":
        if required:
            raise BadReceipt(f"{name} is missing")
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadReceipt(f"{name} must be a string")
    text = str(value)
    if len(text) > limit or not text.isprintable():
        raise BadReceipt(f"{name} is not a plausible value")
    return text


def _beijing(text: str, now: float) -> float:
    """``YYYY-MM-DD hh:mm:ss`` in Beijing time; the receipt's arrival when absent."""
    if not text:
        return now
    return _sane(_seconds(text, " ", "", BEIJING), now)


def _utc(text: str, now: float) -> float:
    """``YYYY-MM-DDThh:mm:ssZ``."""
    return _sane(_seconds(text, "T", "Z", UTC), now)


_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)Z?", re.ASCII)


@functools.lru_cache(maxsize=256)  # a push's reports share a handful of seconds
def _seconds(text: str, middle: str, end: str, zone: timezone) -> float | None:
    found = _TIME.fullmatch(text)
    if found is None or text[10] != middle or not text.endswith(end) or \
            len(text) != 19 + len(end):
        return None
    try:
        year, month, day, hour, minute, second = map(int, found.groups())
        return datetime(year, month, day, hour, minute, second, tzinfo=zone).timestamp()
    except ValueError:  # well-shaped but impossible, e.g. month 13
        return None


def _sane(seconds: float | None, now: float) -> float:
    if seconds is None:
        raise BadReceipt("a time is not in the provider's format")
    if not math.isfinite(seconds) or not EARLIEST <= seconds <= now + FUTURE_SLACK:
        raise BadReceipt("a time is out of range")
    return seconds
