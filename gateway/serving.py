"""Serving: the app on a socket with a connection cap and read deadlines, until a signal."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import resource
import signal
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from gateway import __version__
from gateway.config import MAX_BODY_BYTES, Config, ConfigError, Emulation, load_config
from gateway.keys import gateway_key
from gateway.logs import flush_logs, setup_file
from gateway.problems import Problem

if TYPE_CHECKING:
    from gateway.emulators import EmulatorServer

log = logging.getLogger("gateway")

EXIT_CONFIG = 2

_BUSY = b"too many open connections\n"
_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
            b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY), _BUSY))


class _Refuse(asyncio.Protocol):
    """Over the cap: a short 503 and close, so the descriptor is freed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        log.warning("connection refused: server.max_connections reached")
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_REFUSAL)
        transport.close()


class _Counted(asyncio.Protocol):
    """Passes everything to aiohttp's handler; tells the site when the connection is gone."""

    def __init__(self, inner: asyncio.Protocol, site: CappedSite) -> None:
        self.inner = inner
        self._site = site
        site.open += 1  # counted from accept, before connection_made: a burst cannot overshoot

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._site.open -= 1
        self.inner.connection_lost(exc)


class CappedSite(web.TCPSite):
    """A TCP site that serves at most ``max_connections`` connections at once.

    Without a cap, idle or byte-a-second clients exhaust the process's file descriptors and
    every ``accept`` then fails; over the cap a connection gets a 503 and is closed.
    """

    def __init__(self, runner: web.BaseRunner, host: str, port: int,
                 max_connections: int) -> None:
        super().__init__(runner, host, port)
        self.max_connections = max_connections
        self.open = 0

    def _protocol(self) -> asyncio.Protocol:
        if self.open >= self.max_connections:
            return _Refuse()
        server = self._runner.server
        assert server is not None
        return _Counted(server(), self)

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, self._host, self._port, reuse_address=True)


FD_HEADROOM = 128  # descriptors kept for provider connections, log files, the watcher


def _within_fd_limit(wanted: int) -> int:
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
    if request.body_exists and (declared is None or declared <= MAX_BODY_BYTES):
        timeout = request.app[gateway_key].runtime.config.server.body_timeout
        try:
            async with asyncio.timeout(timeout):
                await request.read()  # kept by aiohttp: the handler's read() is free
        except TimeoutError:
            raise Problem(408, f"the request body did not arrive within {timeout:g}s",
                          slug="request-timeout") from None
    return await handler(request)


def emulation_for(urls: Mapping[str, str]) -> Emulation:
    """Point aliyun/huawei providers at emulators, with emulator credentials where unset."""
    from gateway.emulators import EMULATOR_CREDENTIALS, EMULATOR_OPTIONS

    return Emulation(endpoints=dict(urls), credentials=EMULATOR_CREDENTIALS,
                     options=EMULATOR_OPTIONS)


def emulated_loader(path: Path, emulators: Mapping[str, EmulatorServer],
                    profile: str | None = None) -> Callable[[], Config]:
    """A config loader for ``--emulate``: providers point at the emulators, which also accept
    whatever credentials the config resolves to (so real keys exported in the shell still work)."""
    emulation = emulation_for({kind: server.url for kind, server in emulators.items()})

    def load() -> Config:
        config = load_config(path, emulation=emulation, profile=profile)
        for provider in config.providers:
            server = emulators.get(provider.type)
            if server is not None and len(provider.cls.credential_keys) == 2:
                key_id, secret = (provider.settings.credentials[k].reveal()
                                  for k in provider.cls.credential_keys)
                server.trust(key_id, secret)
        return config

    return load


async def serve(args: argparse.Namespace, path: Path) -> int:
    """Run until a signal; in-flight sends finish (up to server.shutdown_timeout)."""
    from gateway.app import create_app
    from gateway.emulators import start_emulators

    emulators: dict[str, EmulatorServer] = await start_emulators() if args.emulate else {}
    try:
        loader = (emulated_loader(path, emulators, args.env) if emulators
                  else partial(load_config, path, profile=args.env))
        try:
            config = loader()
        except ConfigError as exc:
            log.error("invalid config, not starting:\n%s", exc)
            return EXIT_CONFIG
        try:
            log_file = setup_file(config.logging)
        except OSError as exc:
            log.error("not starting: %s", exc)
            return EXIT_CONFIG
        app = create_app(config, config_path=path, loader=loader, emulators=emulators,
                         watch=True)
        return await _run(app, config, args, log_file)
    finally:
        for server in emulators.values():
            await server.stop()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when the optional ``speed`` extra is installed, else asyncio's own."""
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _tune_gc() -> None:
    """Fewer and shorter cyclic-GC passes while serving (README, Performance).

    A send allocates a few dozen containers and frees nearly all of them by reference counting,
    but with 50 sends in flight the default young-generation threshold (700) starts a pass every
    few sends, each re-scanning every in-flight object: 10,000 makes them rare. What startup
    built (modules, config, app: ~50k objects) lives as long as the process; frozen, it is no
    longer re-scanned by the full passes that stall every in-flight send.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


async def _run(app: web.Application, config: Config, args: argparse.Namespace,
               log_file: Path | None) -> int:
    from gateway.reload import reload_now

    # keepalive_timeout is aiohttp's idle timer: armed when a connection opens and after each
    # response, it closes a connection whose next request's headers are not all in by then.
    runner = web.AppRunner(app, handle_signals=False, access_log=logging.getLogger(
        "aiohttp.access"), shutdown_timeout=config.server.shutdown_timeout,
        keepalive_timeout=config.server.header_timeout)
    await runner.setup()
    site = CappedSite(runner, args.host, args.port, _within_fd_limit(config.server.max_connections))
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, exc.strerror or exc)
        await runner.cleanup()
        return EXIT_CONFIG
    _tune_gc()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    reloads: set[asyncio.Task[bool]] = set()

    def on_stop(signame: str) -> None:
        if stopping.is_set():
            log.warning("second %s: exiting now", signame)
            flush_logs(timeout=1.0)  # os._exit skips atexit: write what is queued, briefly
            os._exit(1)
        log.info("%s: stopping; finishing in-flight sends (up to %ss)", signame,
                 config.server.shutdown_timeout)
        stopping.set()

    def on_hup() -> None:
        task = loop.create_task(reload_now(app[gateway_key]))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop, sig.name)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    banner = f"sms-gateway {__version__} on http://{args.host}:{args.port}/ (dashboard at /)"
    if config.emulated:
        banner += " - emulated: nothing is delivered"
    log.info("%s; config %s; log file %s", banner, config.source, log_file or "none")
    await stopping.wait()
    await runner.cleanup()
    log.info("stopped")
    return 0
