"""The one place aiohttp errors become outcomes.

Whether a failed request may have reached the provider decides between "safe to fail over" and
"maybe sent", so every request records, through aiohttp tracing, whether its headers left.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Awaitable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp
import yarl
from multidict import CIMultiDictProxy

from providers.base import Delivery, Health, SendResult

MAX_RESPONSE_BYTES = 256 * 1024  # provider answers are < 2 KiB; anything larger is not an answer


@dataclass(frozen=True, slots=True)
class WireResponse:
    """A provider's HTTP answer, read in full (bounded)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None


class _Attempt(SimpleNamespace):
    tracked: bool = False
    sent: bool = False


@dataclass(slots=True)
class Wire:
    """What one provider attempt put on the wire, whichever way the provider sends."""

    left: bool = False  # some request's headers were written: the provider may have it


# Set around each attempt by ``guarded``; the session's tracing marks it, so a provider that
# builds its own requests on the shared session is covered as well as ``exchange``.
_wire: ContextVar[Wire | None] = ContextVar("sms_gateway_wire", default=None)


async def guarded(send: Awaitable[SendResult]) -> tuple[SendResult, Exception | None]:
    """Await one provider's ``send``; an exception becomes an outcome (and is handed back to be
    logged once). Raised before any request left, it is the gateway's fault: not sent, safe to
    fail over, nothing for the breaker. Raised after, the provider may have the message."""
    wire = Wire()
    token = _wire.set(wire)
    try:
        return await send, None
    except Exception as exc:
        if wire.left:
            return SendResult(Delivery.UNKNOWN, Health.FAILURE, type(exc).__name__), exc
        return SendResult.not_sent(f"the gateway failed ({type(exc).__name__})"), exc
    finally:
        _wire.reset(token)


async def _on_start(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
    if isinstance(ctx.trace_request_ctx, _Attempt):
        ctx.trace_request_ctx.tracked = True


async def _on_headers_sent(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
    if isinstance(ctx.trace_request_ctx, _Attempt):
        ctx.trace_request_ctx.sent = True
    wire = _wire.get()
    if wire is not None:
        wire.left = True


def tracing() -> aiohttp.TraceConfig:
    """The trace config the shared session needs so timeouts can be told apart."""
    config = aiohttp.TraceConfig()
    config.on_request_start.append(_on_start)
    config.on_request_headers_sent.append(_on_headers_sent)
    return config


def make_session(limit: int = 200) -> aiohttp.ClientSession:
    """The app's one outgoing session: pooled, traced, no cookies, no default timeout."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        trace_configs=[tracing()],
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
        raise_for_status=False,
    )


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
    headers: Mapping[str, str] | None = None,
    data: Any = None,
) -> WireResponse | SendResult:
    """Send one request within ``timeout``; a wire failure comes back as a classified result."""
    attempt = _Attempt()
    try:
        async with asyncio.timeout(timeout):
            async with session.request(
                method, url, headers=headers, data=data, allow_redirects=False,
                trace_request_ctx=attempt,
            ) as resp:
                body = await _read_bounded(resp.content, MAX_RESPONSE_BYTES + 1)
                if len(body) > MAX_RESPONSE_BYTES:
                    resp.close()  # do not drain a runaway body
                    return _maybe(f"HTTP {resp.status}: response too large")
                return WireResponse(resp.status, resp.headers, body)
    except TimeoutError:
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
