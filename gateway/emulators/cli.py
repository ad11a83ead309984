"""``sms-emulator``: the provider emulators alone, for users' own integration tests."""

from __future__ import annotations

import argparse
import asyncio
import html
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from gateway.emulators.server import APPS, EmulatorServer, control_routes, describe
from gateway.emulators.state import EMULATOR_OPTIONS, MODES
from gateway.websec import guard

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sms-emulator",
        description="Serve the Aliyun, Huawei, Tencent and Twilio SMS emulators "
                    "(fake credentials, nothing sent).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000,
                        help="first provider port; the next ones follow (0: free ports)")
    parser.add_argument("--provider", choices=[*APPS, "all"], default="all")
    parser.add_argument("--control-port", type=int, default=None,
                        help="admin API port (default: the port after the last provider)")
    parser.add_argument("--log-level", default="INFO", type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run until SIGINT/SIGTERM; 0 on a clean stop, 1 when a port cannot be bound."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kinds = list(APPS) if args.provider == "all" else [args.provider]
    try:
        asyncio.run(_serve(args, kinds))
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        return 1
    return 0


def _ports(args: argparse.Namespace, count: int) -> tuple[list[int], int]:
    if args.port == 0:  # every port free, the control one included
        return [0] * count, args.control_port or 0
    ports = [args.port + offset for offset in range(count)]
    control = args.control_port if args.control_port is not None else args.port + count
    return ports, control


async def _serve(args: argparse.Namespace, kinds: Sequence[str]) -> None:
    ports, control_port = _ports(args, len(kinds))
    servers = {kind: EmulatorServer(kind, args.host, port) for kind, port in zip(kinds, ports,
                                                                                 strict=True)}
    control = web.Application(middlewares=[guard()])  # no cross-site mode flips
    control.add_routes([_index(servers), *control_routes(servers)])
    runner = web.AppRunner(control)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        for server in servers.values():
            await server.start()
        await runner.setup()
        site = web.TCPSite(runner, args.host, control_port)
        await site.start()
        _announce(servers, f"http://{args.host}:{site.port}")
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
        for server in servers.values():
            await server.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _announce(servers: dict[str, EmulatorServer], control_url: str) -> None:
    for kind, server in servers.items():
        facts = {**server.credentials, **EMULATOR_OPTIONS[kind]}
        settings = " ".join(f"{key}={value!r}" for key, value in facts.items())
        print(f"{kind:<8} {server.url}  {settings}")
    print(f"control  {control_url}/_emulator  modes: {' '.join(MODES)}")
    sys.stdout.flush()


def _index(servers: dict[str, EmulatorServer]) -> web.RouteDef:
    """``GET /``: the emulators as JSON, or as a small page for a browser."""

    async def index(request: web.Request) -> web.Response:
        if "text/html" not in request.headers.get("Accept", ""):
            return web.json_response({"modes": list(MODES), "emulators": {
                kind: describe(server) for kind, server in servers.items()}})
        rows = "".join(
            f"<tr><td>{html.escape(kind)}<td>{html.escape(server.url)}"
            f"<td>{html.escape(server.state.mode)}<td>{server.state.latency_ms}"
            f"<td>{server.state.counters['requests']}<td>{server.state.counters['accepted']}"
            for kind, server in servers.items())
        example = html.escape(str(request.url.with_path(f"/_emulator/{next(iter(servers))}")))
        page = (
            "<!doctype html><meta charset=utf-8><title>SMS emulators</title>"
            "<h1>SMS provider emulators</h1><p>Fake credentials; nothing is delivered.</p>"
            "<table><tr><th>provider<th>url<th>mode<th>latency ms<th>requests<th>accepted"
            f"{rows}</table><p>Modes: {html.escape(', '.join(MODES))}</p>"
            "<pre>curl -X POST -H 'Content-Type: application/json' "
            f"-d '{{\"mode\": \"fail\"}}' {example}</pre>")
        return web.Response(text=page, content_type="text/html")

    return web.get("/", index, allow_head=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
