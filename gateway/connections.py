"""Client connections: a cap on how many are open, and deadlines for headers and bodies.

Without them, idle or byte-a-second clients hold descriptors for as long as they like; past the
process's open-file limit every ``accept`` fails and nothing is served.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import ContentLengthError, PayloadEncodingError

from gateway.config import MAX_BODY_BYTES
from gateway.keys import gateway_key
from gateway.problems import Problem

log = logging.getLogger(__name__)

_BUSY = b"too many open connections\n"
_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
            b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY), _BUSY))
_END_OF_HEADERS = b"\r\n\r\n"


class _Refuse(asyncio.Protocol):
    """Over the cap: a short 503 and close, so the descriptor is freed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        log.warning("connection refused: server.max_connections reached")
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_REFUSAL)
        transport.close()


class _Guarded(asyncio.Protocol):
    """aiohttp's handler for one connection, counted, with a deadline on the first headers.

    aiohttp's keep-alive timer (``keepalive_timeout`` = header_timeout) bounds the wait for
    every later request; only recent aiohttp versions also arm it when a connection opens, so
    the first request's headers get their own timer here: cancelled at the first blank line.
    """

    def __init__(self, inner: asyncio.Protocol, site: CappedSite) -> None:
        self.inner = inner
        self._site = site
        self._transport: asyncio.BaseTransport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._tail = b""
        site.open += 1  # counted from accept, before connection_made: a burst cannot overshoot

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._deadline = asyncio.get_running_loop().call_later(
            self._site.header_timeout, self._too_slow)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._deadline is not None:
            seen = self._tail + data
            if _END_OF_HEADERS in seen:
                self._deadline.cancel()
                self._deadline = None
            else:
                self._tail = seen[-3:]
        self.inner.data_received(data)

    def _too_slow(self) -> None:
        self._deadline = None
        if self._transport is not None:
            log.debug("closing a connection whose first headers took over %ss",
                      self._site.header_timeout)
            self._transport.close()

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._site.open -= 1
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.inner.connection_lost(exc)


class CappedSite(web.TCPSite):
    """A TCP site serving at most ``max_connections`` connections at once; over the cap a
    connection gets a 503 and is closed. The first request's headers must arrive within
    ``header_timeout`` (pass the same value as the runner's ``keepalive_timeout``)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *,
                 max_connections: int, header_timeout: float, reuse_port: bool = False) -> None:
        super().__init__(runner, host, port)
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.open = 0
        self.reuse_port = reuse_port  # --workers: several processes listen on one port

    def _protocol(self) -> asyncio.Protocol:
        if self.open >= self.max_connections:
            return _Refuse()
        server = self._runner.server
        assert server is not None
        return _Guarded(server(), self)

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, self._host, self._port, reuse_address=True,
            reuse_port=self.reuse_port or None)


FD_HEADROOM = 128  # descriptors kept for provider connections, log files, the watcher


def within_fd_limit(wanted: int) -> int:
    """The cap, lowered (with a warning) to fit the process's open-file limit: past it, every
    accept fails and the cap would protect nothing."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or wanted + FD_HEADROOM <= soft:
        return wanted
    fitted = max(1, soft - FD_HEADROOM)
    log.warning("server.max_connections %d does not fit the open-file limit (ulimit -n %d): "
                "serving at most %d connections", wanted, soft, fitted)
    return fitted


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Read the whole body within server.body_timeout, or answer 408: a byte-a-second body
    would hold a connection (and a descriptor) for as long as the client likes."""
    declared = request.content_length
    # A declared size over the limit is refused by the handler before any byte is read.
    # Receipt pushes are larger: their handler reads them, with this deadline and its own limit.
    if request.body_exists and (declared is None or declared <= MAX_BODY_BYTES) \
            and not request.content.is_eof() \
            and not request.path.startswith("/receipts/"):  # all there already: no timer
        timeout = request.app[gateway_key].runtime.config.server.body_timeout
        try:
            async with asyncio.timeout(timeout):
                await request.read()  # kept by aiohttp: the handler's read() is free
        except TimeoutError:
            raise Problem(408, f"the request body did not arrive within {timeout:g}s",
                          slug="request-timeout") from None
        except (ConnectionError, PayloadEncodingError, ContentLengthError):
            pass  # the stream keeps the error: the handler's own read meets it and counts it
    return await handler(request)
