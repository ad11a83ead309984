"""``sms-gateway``: flags, logging first, config, then the server until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from gateway import __version__
from gateway.config import LEVELS, Config, ConfigError, Emulation, load_config
from gateway.logs import flush_logs, setup_console, setup_file

if TYPE_CHECKING:
    from gateway.emulators import EmulatorServer

log = logging.getLogger("gateway")

EXIT_CONFIG = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sms-gateway", description="Send SMS through prioritized providers with failover.")
    parser.add_argument("--config", default="config.yaml", help="config file (./config.yaml)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
    parser.add_argument("--env-file", help="KEY=VALUE lines loaded into the environment first")
    parser.add_argument("--log-level", type=str.upper, choices=LEVELS, metavar="LEVEL",
                        help=f"overrides logging.level from the config ({', '.join(LEVELS)})")
    parser.add_argument("--emulate", action="store_true",
                        help="run the provider emulators in-process and use them")
    parser.add_argument("--check", action="store_true",
                        help="validate the config, print every problem, exit 0 or 2")
    parser.add_argument("--version", action="version", version=f"sms-gateway {__version__}")
    return parser.parse_args(argv)


def load_env_file(path: Path) -> None:
    """The seed's ``--env-file``: ``KEY=VALUE`` lines; blank lines and ``#`` comments skipped."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):]
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"{path}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        os.environ[key.strip()] = value


def emulation_for(urls: Mapping[str, str]) -> Emulation:
    """Point aliyun/huawei providers at emulators, with emulator credentials where unset."""
    from gateway.emulators import EMULATOR_CREDENTIALS, EMULATOR_OPTIONS

    return Emulation(endpoints=dict(urls), credentials=EMULATOR_CREDENTIALS,
                     options=EMULATOR_OPTIONS)


def emulated_loader(path: Path, emulators: Mapping[str, EmulatorServer]) -> Callable[[], Config]:
    """A config loader for ``--emulate``: providers point at the emulators, which also accept
    whatever credentials the config resolves to (so real keys exported in the shell still work)."""
    emulation = emulation_for({kind: server.url for kind, server in emulators.items()})

    def load() -> Config:
        config = load_config(path, emulation=emulation)
        for provider in config.providers:
            server = emulators.get(provider.type)
            if server is not None and len(provider.cls.credential_keys) == 2:
                key_id, secret = (provider.settings.credentials[k].reveal()
                                  for k in provider.cls.credential_keys)
                server.trust(key_id, secret)
        return config

    return load


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sms-gateway`` and ``python -m gateway``."""
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] in {"send", "status"}:  # the caller commands (gateway/callers.py)
        from gateway.callers import main as callers_main
        return callers_main(words)
    args = parse_args(argv)
    setup_console(args.log_level or "INFO")
    if args.env_file:
        try:
            load_env_file(Path(args.env_file))
        except (OSError, ValueError) as exc:
            log.error("cannot read --env-file: %s", exc)
            return EXIT_CONFIG
    path = Path(args.config)
    if args.check:
        from gateway.emulators.server import APPS

        placeholder = dict.fromkeys(APPS, "http://127.0.0.1:1")
        try:
            load_config(path, emulation=emulation_for(placeholder) if args.emulate else None)
        except ConfigError as exc:
            print(f"{path}: invalid\n{exc}", file=sys.stderr)
            return EXIT_CONFIG
        print(f"{path}: ok")
        return 0
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(serve(args, path))
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return 130


async def serve(args: argparse.Namespace, path: Path) -> int:
    """Run until a signal; in-flight sends finish (up to server.shutdown_timeout)."""
    from gateway.app import create_app
    from gateway.emulators import start_emulators

    emulators: dict[str, EmulatorServer] = await start_emulators() if args.emulate else {}
    try:
        loader = emulated_loader(path, emulators) if emulators else partial(load_config, path)
        try:
            config = loader()
        except ConfigError as exc:
            log.error("invalid config, not starting:\n%s", exc)
            return EXIT_CONFIG
        log_file = setup_file(config.logging, args.log_level)
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
    from gateway.keys import gateway_key
    from gateway.reload import reload_now

    runner = web.AppRunner(app, handle_signals=False, access_log=logging.getLogger(
        "aiohttp.access"), shutdown_timeout=config.server.shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
        await runner.cleanup()
        return 1
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
