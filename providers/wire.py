"""The shared session and what its tracing learns: whether a request left, and pool waits.

Whether a failed attempt may have reached the provider decides between "safe to fail over" and
"maybe sent". aiohttp's tracing tells, per request, when the headers were written and how long
it queued for a pooled connection; these hooks record both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp

from providers.base import Delivery, Health, SendResult


class Request(SimpleNamespace):
    """One request's facts (aiohttp's ``trace_request_ctx``), filled in by the hooks below."""

    tracked: bool = False  # the session's tracing saw it start
    sent: bool = False  # its headers were written
    queued_at: float | None = None  # loop time it began waiting for a pooled connection
    timeout: float = 0.0  # its own budget, restarted when a pooled connection is granted
    deadline: asyncio.Timeout | None = None


@dataclass(slots=True)
class Wire:
    """What one provider attempt put on the wire, whichever way the provider sends."""

    provider: str = ""
    left: bool = False  # some request's headers were written: the provider may have it


# Set around each attempt by ``guarded``; the session's tracing marks it, so a provider that
# builds its own requests on the shared session is covered as well as ``exchange``.
_wire: ContextVar[Wire | None] = ContextVar("sms_gateway_wire", default=None)


async def guarded(wire: Wire,
                  send: Awaitable[SendResult]) -> tuple[SendResult, Exception | None]:
    """Await one provider's ``send``, tracked in ``wire``; an exception becomes an outcome (and
    is handed back to be logged once). Raised before any request left, it is the gateway's
    fault: not sent, safe to fail over, nothing for the breaker. Raised after, the provider may
    have the message."""
    token = _wire.set(wire)
    try:
        return await send, None
    except Exception as exc:
        if wire.left:
            return SendResult(Delivery.UNKNOWN, Health.FAILURE, type(exc).__name__), exc
        return SendResult.not_sent(f"the gateway failed ({type(exc).__name__})"), exc
    finally:
        _wire.reset(token)


@dataclass(frozen=True, slots=True)
class Pool:
    """The outgoing connection pool: its size per host, how long a send may queue for a
    connection (read per request, so a reload applies it), and who hears about waits."""

    size: int = 200
    wait: Callable[[], float] = lambda: 1.0
    # (provider, seconds queued, whether a connection was granted): for /metrics
    on_wait: Callable[[str, float, bool], None] = lambda provider, seconds, granted: None

    def tracing(self) -> aiohttp.TraceConfig:
        """The hooks the shared session needs so timeouts and pool waits can be told apart."""
        config = aiohttp.TraceConfig()
        config.on_request_start.append(_on_start)
        config.on_request_headers_sent.append(_on_headers_sent)
        config.on_connection_queued_start.append(self._on_queued)
        config.on_connection_queued_end.append(self._on_granted)
        config.on_request_exception.append(self._on_exception)
        return config

    async def _on_queued(self, _s: Any, ctx: SimpleNamespace, _p: Any) -> None:
        request = ctx.trace_request_ctx
        if isinstance(request, Request):
            # Queueing has its own bound: time spent here must not eat the provider's timeout.
            loop = asyncio.get_running_loop()
            request.queued_at = loop.time()
            if request.deadline is not None:
                request.deadline.reschedule(loop.time() + self.wait())

    async def _on_granted(self, _s: Any, ctx: SimpleNamespace, _p: Any) -> None:
        request = ctx.trace_request_ctx
        if isinstance(request, Request) and request.queued_at is not None:
            now = asyncio.get_running_loop().time()
            self.on_wait(_provider(), now - request.queued_at, True)
            request.queued_at = None
            if request.deadline is not None:  # the provider's time starts now
                request.deadline.reschedule(now + request.timeout)

    async def _on_exception(self, _s: Any, ctx: SimpleNamespace, _p: Any) -> None:
        request = ctx.trace_request_ctx
        if (isinstance(request, Request) and request.queued_at is not None
                and request.deadline is not None and request.deadline.expired()):
            # gave up queueing (a cancelled send, a caller gone or a shutdown, is not counted)
            now = asyncio.get_running_loop().time()
            self.on_wait(_provider(), now - request.queued_at, False)

    def session(self) -> aiohttp.ClientSession:
        """The app's one outgoing session: pooled per host, traced, no cookies, no timeout."""
        # No total limit: one host's full pool must not make sends to another queue.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=self.size, ttl_dns_cache=300)
        return aiohttp.ClientSession(
            connector=connector,
            trace_configs=[self.tracing()],
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
            raise_for_status=False,
        )


def make_session(limit: int = 200) -> aiohttp.ClientSession:
    """A session like the app's, with ``limit`` connections per host."""
    return Pool(size=limit).session()


def _provider() -> str:
    wire = _wire.get()
    return wire.provider if wire is not None and wire.provider else "-"


async def _on_start(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
    if isinstance(ctx.trace_request_ctx, Request):
        ctx.trace_request_ctx.tracked = True


async def _on_headers_sent(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
    if isinstance(ctx.trace_request_ctx, Request):
        ctx.trace_request_ctx.sent = True
    wire = _wire.get()
    if wire is not None:
        wire.left = True
