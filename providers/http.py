"""The one place aiohttp errors become outcomes.

Whether a failed request may have reached the provider decides between "safe to fail over" and
"maybe sent", so every request records, through the session's tracing (``providers.wire``),
whether its headers left and whether it is still queued for a pooled connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import yarl
from multidict import CIMultiDictProxy

from providers.base import Delivery, Health, SendResult
from providers.wire import Request, make_session

__all__ = ["MAX_RESPONSE_BYTES", "MAX_RETRY_AFTER", "Classify", "WireResponse", "exchange",
           "exchange_with", "make_session", "retry_after"]

MAX_RESPONSE_BYTES = 256 * 1024  # provider answers are < 2 KiB; anything larger is not an answer


@dataclass(frozen=True, slots=True)
class WireResponse:
    """A provider's HTTP answer, read in full (bounded)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    document: Any  # the body decoded as JSON, or None when it is not JSON
    fields: Mapping[str, Any]  # the body when it is a JSON object, else empty

    @classmethod
    def read(cls, status: int, headers: CIMultiDictProxy[str], body: bytes) -> WireResponse:
        try:
            decoded = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            decoded = None
        return cls(status, headers, body, decoded, decoded if isinstance(decoded, dict) else {})


# What a provider's code means: (the answer, the code it carries) -> outcome. Answers without a
# code never reach it; ``exchange`` classifies those, the same way for every provider.
Classify = Callable[[WireResponse, str], SendResult]


def without_code(response: WireResponse, field: str) -> SendResult:
    """An answer with no provider code in ``field`` (an HTML error page, a proxy, garbage)."""
    if response.status == 429:  # Too Many Requests means the same from anyone
        return SendResult(Delivery.SAFE, Health.THROTTLED, "HTTP 429",
                          retry_after=retry_after(response.headers))
    if response.status >= 500 or 200 <= response.status < 300:  # may have been acted on
        return _maybe(f"HTTP {response.status}: no {field}")
    return _safe(f"HTTP {response.status}")  # refused before it was processed


def _maybe(reason: str) -> SendResult:
    return SendResult(Delivery.UNKNOWN, Health.FAILURE, reason)


def _safe(reason: str) -> SendResult:
    return SendResult(Delivery.SAFE, Health.FAILURE, reason)


async def exchange(
    session: aiohttp.ClientSession,
    method: str,
    url: str | yarl.URL,
    timeout: float,
    *,
    code: str,
    classify: Classify,
    headers: Mapping[str, str] | None = None,
    data: Any = None,
) -> SendResult:
    """Send one request within ``timeout`` and classify the outcome: wire failures here, an
    answer without a provider code in its JSON ``code`` field by ``without_code``, an answer
    with one by the provider's ``classify``."""

    def read(response: WireResponse) -> SendResult:
        found = response.fields.get(code)
        return classify(response, found) if isinstance(found, str) else without_code(response, code)

    return await exchange_with(session, method, url, timeout, read=read, headers=headers,
                               data=data)


async def exchange_with(
    session: aiohttp.ClientSession,
    method: str,
    url: str | yarl.URL,
    timeout: float,
    *,
    read: Callable[[WireResponse], SendResult],
    headers: Mapping[str, str] | None = None,
    data: Any = None,
) -> SendResult:
    """``exchange`` for providers whose code is not one top-level string (nested, numeric,
    configured): wire failures are classified here, every answer by ``read``."""
    response = await _request(session, method, url, timeout, headers, data)
    return response if isinstance(response, SendResult) else read(response)


async def _request(session: aiohttp.ClientSession, method: str, url: str | yarl.URL,
                   timeout: float, headers: Mapping[str, str] | None,
                   data: Any) -> WireResponse | SendResult:
    """The answer, or the classified wire failure."""
    attempt = Request(timeout=timeout)
    try:
        async with asyncio.timeout(timeout) as attempt.deadline:
            async with session.request(
                method, url, headers=headers, data=data, allow_redirects=False,
                trace_request_ctx=attempt,
            ) as resp:
                body = await _read_bounded(resp.content, MAX_RESPONSE_BYTES + 1)
                if len(body) > MAX_RESPONSE_BYTES:
                    resp.close()  # do not drain a runaway body
                    return _maybe(f"HTTP {resp.status}: response too large")
                return WireResponse.read(resp.status, resp.headers, body)
    except TimeoutError:
        if attempt.queued_at is not None:  # no pooled connection in time: it never left
            return SendResult.not_sent("no pooled connection free in time (server.pool_wait)")
        if attempt.tracked and not attempt.sent:
            return _safe("connect timeout")
        return _maybe("timeout")
    except aiohttp.ClientConnectorError as exc:
        return _safe(f"connect failed: {_short(exc)}")
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError,
            aiohttp.ClientOSError) as exc:
        if attempt.tracked and not attempt.sent:
            return _safe(f"connection error: {_short(exc)}")
        return _maybe(f"connection lost: {type(exc).__name__}")
    except aiohttp.ClientError as exc:
        if not attempt.sent:  # e.g. an invalid URL: ours, and the provider never saw it
            return SendResult.not_sent(f"client error: {type(exc).__name__}")
        return _maybe(f"client error: {type(exc).__name__}")


async def _read_bounded(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to its end or ``limit`` bytes, whichever comes first.

    ``StreamReader.read(n)`` returns what is buffered (at most n), not n bytes: one call would
    take the first TCP segment of a split answer for the whole body.
    """
    body = bytearray()
    while len(body) < limit:
        chunk = await stream.read(limit - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def _short(exc: BaseException) -> str:
    """``connection refused`` rather than a message with addresses and errno numbers."""
    cause = getattr(exc, "certificate_error", None) or getattr(exc, "os_error", exc)
    if isinstance(cause, ssl.SSLError):  # its errno is the TLS library's code, not the OS's
        return f"tls: {getattr(cause, 'reason', None) or type(cause).__name__}".lower()
    errno = getattr(cause, "errno", None)
    if isinstance(errno, int) and errno > 0:  # asyncio's strerror names the address and port
        return os.strerror(errno).lower()
    return str(getattr(cause, "strerror", None) or type(cause).__name__).lower()


MAX_RETRY_AFTER = 24 * 3600  # a provider asking for longer (or for inf) is capped at a day


def retry_after(headers: Mapping[str, str], *names: str) -> float | None:
    """The first of ``names`` (default Retry-After) as seconds, when it is a positive number."""
    for name in names or ("Retry-After",):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            continue
        if seconds > 0:  # nan fails this; inf ("1e999" parses) is capped
            return min(seconds, MAX_RETRY_AFTER)
    return None
