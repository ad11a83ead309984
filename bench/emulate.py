"""The provider emulators in a helper process: ``python -m bench.emulate``.

Like ``sms-emulator --port 0``, but it announces its ports as one JSON line, so the runner needs
no fixed ports, and it logs warnings only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys

from aiohttp import web

from gateway.emulators import control_routes, start_emulators

ANNOUNCE = "BENCH_EMULATORS "


async def serve() -> None:
    servers = await start_emulators("127.0.0.1")
    control = web.Application()
    control.add_routes(control_routes(servers))
    runner = web.AppRunner(control, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    urls = {kind: server.url for kind, server in servers.items()}
    print(ANNOUNCE + json.dumps({**urls, "control": f"http://127.0.0.1:{site.port}"}),
          flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        for server in servers.values():
            await server.stop()


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
