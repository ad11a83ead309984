"""Case 10 (issue 14): one process vs ``--workers 2`` on PostgreSQL, and PostgreSQL vs SQLite.

Three gateways on the same emulators, measured in alternating rounds (the order rotates, so a
slow spell of this shared machine hits each alike): one process on a fresh PostgreSQL database,
``--workers 2`` on the same database, one process on a SQLite file. The load generator, the
emulators and PostgreSQL share the machine's cores with the gateways: the figures say what this
machine does, not what two hosts would. CPU per send of the workers adds up both workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import statistics
import sys
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bench.cases import CONNS, Bench, combined
from bench.configs import gateway_config, provider
from bench.loadgen import LoadResult
from bench.procs import Child, free_port, process_tree
from bench.report import Figure, ratio

ADMIN_URL = os.environ.get("SMS_GATEWAY_TEST_DATABASE_URL",
                           "postgresql://postgres@127.0.0.1:5432/postgres")


async def _admin(statement: str) -> None:
    engine = create_async_engine(make_url(ADMIN_URL).set(drivername="postgresql+asyncpg"),
                                 isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A PostgreSQL database for this run only, dropped afterwards."""
    name = f"smsgw_bench_{secrets.token_hex(5)}"
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _config(urls: dict[str, str], store: str) -> str:
    return gateway_config(
        server={"api_keys": [], "max_recipients": 100, "shutdown_timeout": "2s"},
        logging={"level": "WARNING", "file": None},
        defaults={"region": "CN", "timeout": "5s", "deadline": "15s"},
        templates=("verify_code",), storage={"url": store},
        providers=[
            provider("aliyun", priority=1, endpoint=urls["aliyun"], inline=True,
                     templates=("verify_code",)),
            provider("huawei", priority=2, endpoint=urls["huawei"], inline=True,
                     templates=("verify_code",)),
        ])


def _start(b: Bench, name: str, store: str, *flags: str) -> Child:
    folder = b.stack.children.workdir / name
    folder.mkdir()
    config = folder / "config.yaml"
    config.write_text(_config(b.stack.urls, store), encoding="utf-8")
    port = free_port()
    child = b.stack.children.start(name, [sys.executable, "-m", "gateway", "--config",
                                          str(config), "--port", str(port),
                                          "--log-level", "WARNING", *flags])
    child.url = f"http://127.0.0.1:{port}"
    b.stack.gateways.append(child)
    return child


async def _load(b: Bench, name: str, target: Child) -> LoadResult:
    """One run; CPU per send counted over the whole process tree (workers included)."""
    result = await b.load(name, target, CONNS)
    b.runs[name]["processes"] = len(process_tree(target.pid))
    return result


async def case10(b: Bench) -> None:
    """One process vs two workers (PostgreSQL), and PostgreSQL vs SQLite, same run."""
    async with fresh_database() as database:
        one = _start(b, "pg-1-process", database)
        await b.stack.ready(one)  # migrated before the others start on the same database
        two = _start(b, "pg-2-workers", database, "--workers", "2")
        lite = _start(b, "sqlite-1-process", f"sqlite:///{b.workdir / 'bench.db'}")
        await b.stack.ready(two, lite)
        await asyncio.sleep(3)  # every worker up (the first one answering is not all)
        await b.stack.fresh()
        await b.warm(one, two, lite)
        targets = {"1 process, PostgreSQL": one, "2 workers, PostgreSQL": two,
                   "1 process, SQLite": lite}
        runs: dict[str, list[LoadResult]] = {label: [] for label in targets}
        order = list(targets)
        for index in range(b.rounds):
            turn = order[index % 3:] + order[:index % 3]
            for label in turn:
                name = f"10 {label}, 0 ms, {CONNS} conns, round {index + 1}"
                runs[label].append(await _load(b, name, targets[label]))
        _figures(b, runs)
        for child in (one, two, lite):
            b.stack.gateways.remove(child)


def _figures(b: Bench, runs: dict[str, list[LoadResult]]) -> None:
    one, two, lite = (runs[k] for k in ("1 process, PostgreSQL", "2 workers, PostgreSQL",
                                        "1 process, SQLite"))
    workers = [w.rps / o.rps for o, w in zip(one, two, strict=True)]
    engines = [o.rps / s.rps for o, s in zip(one, lite, strict=True)]
    mid_workers, mid_engines = statistics.median(workers), statistics.median(engines)
    p1, p2, ps = combined(one), combined(two), combined(lite)
    faults = p1.faults + p2.faults + ps.faults
    b.add(
        Figure("10", f"throughput, 2 workers vs 1 process on PostgreSQL (median of "
               f"{b.rounds} rounds)", f"{p2.rps:.0f} rps", f"1 process {p1.rps:.0f} rps",
               f"{mid_workers:.2f}x (rounds {' / '.join(f'{r:.2f}' for r in workers)})",
               ">= 1.00x", mid_workers >= 1.0 and faults == 0),
        Figure("10", f"throughput, PostgreSQL vs SQLite, 1 process (median of {b.rounds} "
               "rounds)", f"{p1.rps:.0f} rps", f"SQLite {ps.rps:.0f} rps",
               f"{mid_engines:.2f}x (rounds {' / '.join(f'{r:.2f}' for r in engines)})",
               ">= 0.60x", mid_engines >= 0.6 and faults == 0),
        Figure("10", "p50 / p99, 1 process on PostgreSQL", f"{p1.p50_ms:.1f} / {p1.p99_ms:.1f} ms",
               f"SQLite {ps.p50_ms:.1f} / {ps.p99_ms:.1f} ms", ratio(p1.p50_ms, ps.p50_ms)),
        Figure("10", "p50 / p99, 2 workers on PostgreSQL", f"{p2.p50_ms:.1f} / {p2.p99_ms:.1f} ms",
               f"1 process {p1.p50_ms:.1f} / {p1.p99_ms:.1f} ms", ratio(p2.p50_ms, p1.p50_ms)),
        Figure("10", "CPU per send (all processes of the gateway)",
               f"2 workers {p2.cpu_us_per_request or 0:.0f} us",
               f"1 process PG {p1.cpu_us_per_request or 0:.0f} us, SQLite "
               f"{ps.cpu_us_per_request or 0:.0f} us",
               ratio(p2.cpu_us_per_request or 0, p1.cpu_us_per_request or 0)),
    )
