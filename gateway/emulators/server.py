"""Emulators on real sockets: start, stop, switch modes (``down`` included), and admin routes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import yarl
from aiohttp import web

from gateway.emulators.aliyun import aliyun_app
from gateway.emulators.huawei import huawei_app
from gateway.emulators.state import EMULATOR_CREDENTIALS, MODES, RECEIPT_MODES, EmulatorState
from gateway.emulators.tencent import tencent_app
from gateway.emulators.twilio import twilio_app

log = logging.getLogger(__name__)

APPS: dict[str, Callable[[EmulatorState, Mapping[str, str]], web.Application]] = {
    "aliyun": aliyun_app,
    "huawei": huawei_app,
    "tencent": tencent_app,
    "twilio": twilio_app,
}
_CLOSE_WAIT = 1.0  # seconds to let closed connections finish their handlers
_CHANGES = frozenset({"mode", "latency_ms", "receipt_mode", "receipt_delay", "receipt_url"})


class EmulatorServer:
    """One provider emulator on a local port that stays the same across ``down`` and back."""

    def __init__(self, kind: str, host: str = "127.0.0.1", port: int = 0,
                 credentials: Mapping[str, str] | None = None) -> None:
        if kind not in APPS:
            raise ValueError(f"unknown emulator kind {kind!r}; known: {', '.join(APPS)}")
        self.kind = kind
        self.host = host
        self._port = port
        self.credentials = dict(credentials or EMULATOR_CREDENTIALS[kind])
        self._state = EmulatorState(kind)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def state(self) -> EmulatorState:
        """The live state: mode, latency, counters, accepted messages."""
        return self._state

    def trust(self, key_id: str, secret: str) -> None:
        """Also accept this key pair (``--emulate`` with the config's own credentials set)."""
        self._state.secrets[key_id] = secret

    @property
    def port(self) -> int:
        """The listening port (fixed after the first start, even when asked for port 0)."""
        return self._port

    @property
    def url(self) -> str:
        """The base URL a provider's ``endpoint`` should be set to."""
        return str(yarl.URL.build(scheme="http", host=self.host, port=self._port))

    async def start(self) -> None:
        """Serve the emulator app; the first start fixes the port."""
        if self._runner is not None:
            return
        app = APPS[self.kind](self._state, self.credentials)
        # handler_cancellation: a hanging handler ends when its client goes away. No access
        # log: an Aliyun request line carries phone numbers and signatures.
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=_CLOSE_WAIT,
                               access_log=None)
        await runner.setup()
        self._runner = runner
        try:
            await self._listen()
        except BaseException:
            self._runner = None
            await runner.cleanup()
            raise
        if self._state.mode == "down":
            await self._close()
        log.info("%s emulator listening on %s", self.kind, self.url)

    async def stop(self) -> None:
        """Stop listening and end every connection, hanging ones included."""
        if self._runner is None:
            return
        await self._close()
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def apply(self, mode: str, latency_ms: int | None = None) -> None:
        """Switch mode; ``down`` closes the listener and its connections, leaving it reopens."""
        previous = self._state.mode
        self._state.set_mode(mode, latency_ms)  # validates before anything changes
        try:
            if mode == "down":
                await self._close()
            elif self._site is None and self._runner is not None:
                await self._listen()
        except OSError:
            self._state.mode = previous  # e.g. someone else took the port meanwhile
            raise
        log.info("%s emulator mode %s, latency %d ms", self.kind, mode, self._state.latency_ms)

    async def _listen(self) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self.host, self._port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await site.stop()  # unregister the dead site from the runner
            raise
        self._port = site.port  # port 0 becomes the bound port, reused on every reopen
        self._site = site

    async def _close(self) -> None:
        if self._site is not None:
            site, self._site = self._site, None
            await site.stop()
        server = self._runner.server if self._runner is not None else None
        if server is None:
            return
        # Keep-alive connections outlive the listener; close them so a pooled client is
        # refused on its next request instead of still reaching a "down" provider.
        for connection in server.connections:
            connection.force_close()
        # Then wait for their handlers to finish (cancelled hangs included); the server object
        # keeps serving new connections once the listener reopens.
        await server.shutdown(_CLOSE_WAIT)


async def start_emulators(host: str = "127.0.0.1",
                          kinds: Iterable[str] | None = None,
                          ) -> dict[str, EmulatorServer]:
    """Start one emulator per kind (default: every kind), each on a free port; all or none."""
    servers: dict[str, EmulatorServer] = {}
    try:
        for kind in APPS if kinds is None else kinds:
            server = EmulatorServer(kind, host)
            await server.start()
            servers[kind] = server
    except BaseException:
        for server in servers.values():
            await server.stop()
        raise
    return servers


def describe(server: EmulatorServer) -> dict[str, Any]:
    """The snapshot plus the URL, as the admin routes show it."""
    return {**server.state.snapshot(), "url": server.url}


def _problem(status: int, title: str, detail: str, **extra: Any) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return web.json_response(body, status=status, content_type="application/problem+json")


def _receipt_url(value: object) -> str | None:
    """An http(s) URL for receipts, None to stop them; ValueError for anything else."""
    if value is None or value == "":
        return None
    url = yarl.URL(value) if isinstance(value, str) else None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ValueError("receipt_url must be an http:// or https:// URL (or null)")
    return str(url)


def control_routes(servers: Mapping[str, EmulatorServer]) -> list[web.RouteDef]:
    """Admin routes under ``/_emulator``, mountable on any app (the gateway's own included)."""

    def unknown(kind: str, status: int) -> web.Response:
        return _problem(status, "Unknown emulator", f"no emulator {kind!r}",
                        kinds=list(servers))

    async def overview(_request: web.Request) -> web.Response:
        return web.json_response({"emulators": {k: describe(s) for k, s in servers.items()}})

    async def show(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        server = servers.get(kind)
        return unknown(kind, 404) if server is None else web.json_response(describe(server))

    async def change(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        server = servers.get(kind)
        if server is None:
            return unknown(kind, 400)
        if request.content_type != "application/json":
            # A web page cannot send application/json cross-site without a CORS preflight,
            # so this keeps any page open in a local browser from flipping modes.
            return _problem(415, "Bad emulator change", "send the change as application/json")
        try:
            body = await request.json()
        except (ValueError, RecursionError):  # RecursionError: JSON nested past the C stack
            body = None
        if not isinstance(body, dict) or not body or set(body) - _CHANGES \
                or not isinstance(body.get("mode", ""), str):
            return _problem(400, "Bad emulator change",
                            'send a JSON object with "mode", "latency_ms", "receipt_mode" '
                            'and/or "receipt_delay"', modes=list(MODES),
                            receipt_modes=list(RECEIPT_MODES))
        try:
            # checked before anything changes: a wrong receipt mode leaves the mode as it was
            probe = EmulatorState(kind)
            probe.set_receipts(body.get("receipt_mode"), body.get("receipt_delay"))
            url = _receipt_url(body.get("receipt_url", ""))
            if "mode" in body or "latency_ms" in body:
                await server.apply(body.get("mode", server.state.mode), body.get("latency_ms"))
            server.state.set_receipts(body.get("receipt_mode"), body.get("receipt_delay"))
            if "receipt_url" in body:  # where receipts go without a statusCallback (Aliyun's)
                server.state.receipt_url = url
        except ValueError as exc:
            return _problem(400, "Bad emulator change", str(exc), modes=list(MODES),
                            receipt_modes=list(RECEIPT_MODES))
        except OSError as exc:
            return _problem(503, "Port unavailable", f"cannot listen again: {exc.strerror}")
        return web.json_response(describe(server))

    async def reset(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        server = servers.get(kind)
        if server is None:
            return unknown(kind, 400)
        server.state.reset()
        return web.json_response(describe(server))

    return [
        web.get("/_emulator", overview, allow_head=False),
        web.get("/_emulator/{kind}", show, allow_head=False),
        web.post("/_emulator/{kind}", change),
        web.post("/_emulator/{kind}/reset", reset),
    ]
