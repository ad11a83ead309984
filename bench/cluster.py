"""``make cluster``: two gateway replicas on the local PostgreSQL behind a round-robin balancer.

    python -m bench.cluster [--port 8080] [--database postgresql://...] [--replicas 2]

The database (default ``sms_gateway_cluster`` on 127.0.0.1:5432) is created if missing and kept
between runs. The replicas share the provider emulators (run here, in this process) and the
store; the balancer (bench/balancer.py, aiohttp) answers on ``--port``, each replica on a port of
its own (printed, for a look at one replica's dashboard). Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import tempfile
from pathlib import Path

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bench.balancer import balancer_app
from bench.configs import gateway_config, provider
from bench.procs import Children, free_port, wait_http
from gateway.emulators import EmulatorServer, start_emulators

DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/sms_gateway_cluster"
log = logging.getLogger("cluster")


async def ensure_database(url: str) -> None:
    """CREATE DATABASE for ``url``'s database if it does not exist (via the postgres one)."""
    target = make_url(url)
    admin = target.set(drivername="postgresql+asyncpg", database="postgres")
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                      {"name": target.database})
            if not found:
                await conn.execute(text(f'CREATE DATABASE "{target.database}"'))
                log.info("created database %s", target.database)
    finally:
        await engine.dispose()


def replica_yaml(database: str, emulators: dict[str, EmulatorServer], log_file: str) -> str:
    """One replica's config: both emulated providers, the shared store, its own log file."""
    return gateway_config(
        server={"api_keys": [], "shutdown_timeout": "5s"},
        logging={"level": "INFO", "file": log_file},
        defaults={"region": "CN", "timeout": "5s", "deadline": "15s"},
        storage={"url": database},
        providers=[provider("aliyun", priority=1, endpoint=emulators["aliyun"].url, inline=True),
                   provider("huawei", priority=2, endpoint=emulators["huawei"].url,
                            inline=True)])


async def run(port: int, database: str, count: int, host: str) -> int:
    await ensure_database(database)
    emulators = await start_emulators(kinds=("aliyun", "huawei"))
    workdir = Path(tempfile.mkdtemp(prefix="sms-gateway-cluster-"))
    children = Children(workdir)
    runner: web.AppRunner | None = None
    try:
        urls = []
        for index in range(count):
            name = f"replica-{chr(ord('a') + index)}"
            config = workdir / f"{name}.yaml"
            config.write_text(replica_yaml(database, emulators, f"{name}.log"))
            replica_port = free_port()
            child = children.start(name, [sys.executable, "-m", "gateway", "--config",
                                          str(config), "--port", str(replica_port)])
            urls.append((child, f"http://127.0.0.1:{replica_port}"))
        for child, url in urls:
            await wait_http(child, url + "/healthz", timeout=60)
        runner = web.AppRunner(balancer_app([url for _, url in urls]), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        print(f"\nsms-gateway cluster: {count} replicas on {make_url(database).render_as_string()}"
              f"\n  balancer  http://{host}:{port}/   (round robin; X-Replica names the one)")
        for child, url in urls:
            print(f"  {child.name} {url}/   (log {child.log})")
        print(f"""\ntry:
  curl -s -X POST http://{host}:{port}/sms -H 'Content-Type: application/json' \\
       -H 'Idempotency-Key: demo-1' \\
       -d '{{"to": ["+8613800138000"], "template": "verify_code", "params": {{"code": "1234"}}}}'
  curl -s http://{host}:{port}/status | python3 -m json.tool | grep -A3 '"replicas"'
Ctrl-C stops it.\n""", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        while not stop.is_set():
            for child, _ in urls:
                child.check_alive()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        print("stopping", flush=True)
        return 0
    finally:
        if runner is not None:
            await runner.cleanup()
        children.close()
        for emulator in emulators.values():
            await emulator.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="the balancer's port (8080)")
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="PostgreSQL URL")
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        return asyncio.run(run(args.port, args.database, args.replicas, args.host))
    except RuntimeError as exc:  # a replica died: its log's tail says why
        print(f"cluster stopped: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
