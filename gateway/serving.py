"""Serving: config, logging file, the app on a capped socket, until a signal."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from gateway import __version__
from gateway.config import Config, ConfigError, Emulation, load_config
from gateway.connections import CappedSite, within_fd_limit
from gateway.keys import gateway_key
from gateway.logs import flush_logs, setup_file

if TYPE_CHECKING:
    from gateway.emulators import EmulatorServer

log = logging.getLogger("gateway")

EXIT_CONFIG = 2

def emulation_for(urls: Mapping[str, str], local_url: str | None = None) -> Emulation:
    """Point aliyun/huawei providers at emulators, with emulator credentials where unset;
    receipts go to ``local_url`` (the gateway itself) unless the config says otherwise."""
    from gateway.emulators import EMULATOR_CREDENTIALS, EMULATOR_OPTIONS

    return Emulation(endpoints=dict(urls), credentials=EMULATOR_CREDENTIALS,
                     options=EMULATOR_OPTIONS, public_url=local_url)


def emulated_loader(path: Path, emulators: Mapping[str, EmulatorServer],
                    profile: str | None = None,
                    local_url: str | None = None) -> Callable[[], Config]:
    """A config loader for ``--emulate``: providers point at the emulators, which also accept
    whatever credentials the config resolves to (so real keys exported in the shell still work).
    With ``local_url`` (the gateway's own address) the emulators post their receipts to it."""
    emulation = emulation_for({kind: server.url for kind, server in emulators.items()},
                              local_url)

    def load() -> Config:
        config = load_config(path, emulation=emulation, profile=profile)
        for provider in config.providers:
            server = emulators.get(provider.type)
            if server is not None and len(provider.cls.credential_keys) == 2:
                key_id, secret = (provider.settings.credentials[k].reveal()
                                  for k in provider.cls.credential_keys)
                server.trust(key_id, secret)
        token = config.receipts.token
        for kind, server in emulators.items() if local_url else ():
            # Aliyun's receipt URL is set in its console; an emulator's is set here
            server.state.receipt_url = (f"{local_url}/receipts/{kind}/{token.reveal()}"
                                        if token else None)
        return config

    return load


async def serve(args: argparse.Namespace, path: Path) -> int:
    """Run until a signal; in-flight sends finish (up to server.shutdown_timeout)."""
    from gateway.app import create_app
    from gateway.emulators import start_emulators

    emulators: dict[str, EmulatorServer] = await start_emulators() if args.emulate else {}
    try:
        local = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host  # noqa: S104
        loader = (emulated_loader(path, emulators, args.env,
                                  local_url=f"http://{_bracketed(local)}:{args.port}")
                  if emulators
                  else partial(load_config, path, profile=args.env))
        if args.worker_index is not None:  # one of --workers: a log file of its own
            from gateway.workers import worker_loader
            loader = worker_loader(loader, args.worker_index)
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


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


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
    from gateway.store import StoreError  # with the app: importing cli sets nothing up

    # keepalive_timeout is aiohttp's idle timer: armed when a connection opens and after each
    # response, it closes a connection whose next request's headers are not all in by then.
    runner = web.AppRunner(app, handle_signals=False, access_log=logging.getLogger(
        "aiohttp.access"), shutdown_timeout=config.server.shutdown_timeout,
        keepalive_timeout=config.server.header_timeout)
    try:
        await runner.setup()  # opens (and migrates) the message store
    except StoreError as exc:
        log.error("not starting: %s", exc)
        await runner.cleanup()
        return EXIT_CONFIG
    site = CappedSite(runner, args.host, args.port, header_timeout=config.server.header_timeout,
                      max_connections=within_fd_limit(config.server.max_connections),
                      reuse_port=args.worker_index is not None)
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
    log.info("%s; config %s; log file %s; message store %s", banner, config.source,
             log_file or "none", app[gateway_key].store.target.shown)
    if args.worker_index is not None:  # one of --workers: stop if the supervisor dies
        from gateway.workers import orphaned
        watch = loop.create_task(orphaned())
        watch.add_done_callback(lambda _: stopping.set())
    await stopping.wait()
    await runner.cleanup()
    log.info("stopped")
    return 0
