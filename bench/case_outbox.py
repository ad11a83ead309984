"""Case 7 of ``python -m bench``: async sending (issue 11), each figure against a same-run baseline.

7a  async intake: 202 answers/s at 0 ms provider latency, SQLite store, 50 connections, against
    the bare proxy's sync throughput under the same load (target >= 1.0x: an async send does
    less, one durable write and no provider call). The gateway runs ``storage.workers: 0`` (it
    only queues; nothing drains during the run), so the figure is the intake alone.
7b  outbox drain: a backlog sent at 100 ms provider latency with ``storage.workers: 50``, in
    messages/s once the intake has stopped, against C/L = 50 / 0.1 s = 500/s (target >= 0.9x);
    a sync gateway under 50 connections at the same latency is measured as a reference.
7c  with ``--backlog N`` (issue 11 says 100,000): the intake's p99 with N queued against the
    same process's with an empty queue (target <= 1.5x), and the drain rate over two windows
    of that backlog (steady: the second like the first).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from bench.loadgen import body
from bench.procs import cpu_seconds
from bench.report import Figure, ratio
from bench.stack import Stack, bench_config
from gateway.store import open_store
from gateway.store.schema import messages, recipients, to_us

if TYPE_CHECKING:
    from bench.cases import Bench
    from bench.procs import Child

CONNS = 50
DRAIN_WORKERS = 50
DRAIN_LATENCY_S = 0.1
_SENT = re.compile(r'^sms_outbox_sends_total\{result="sent"\} (\S+)$', re.MULTILINE)


def store_of(stack: Stack, name: str) -> Path:
    """The SQLite file of the gateway started as ``name``."""
    return stack.children.workdir / name / "store.db"


def start_async_gateway(stack: Stack, name: str, workers: int, store: Path | None = None) -> Child:
    """A gateway whose template is async (so the load's sync body queues), on a SQLite file
    (its own, or ``store``: another gateway's)."""
    text = bench_config(stack.urls).replace(
        "verify_code: {params: [code], on_unknown: failover}",
        "verify_code: {params: [code], on_unknown: failover, mode: async}").replace(
        "storage: {url: memory}",
        f'storage: {{url: "sqlite:///{store or store_of(stack, name)}", workers: {workers}}}')
    return stack.start_config(name, text)


async def sent_so_far(gateway: Child) -> int:
    """The outbox's sends that ended ``sent``, from the gateway's /metrics."""
    async with aiohttp.ClientSession() as session, session.get(f"{gateway.url}/metrics") as r:
        found = _SENT.search(await r.text())
    return round(float(found[1])) if found else 0


async def queue_many(gateway: Child, count: int, conns: int = CONNS) -> float:
    """POST ``count`` async sends over ``conns`` connections; the seconds it took."""
    started = time.perf_counter()
    left = iter(range(count))
    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for _ in left:
                async with session.post(f"{gateway.url}/sms", data=body(),
                                        headers={"Content-Type": "application/json"}) as r:
                    if r.status != 202:
                        raise RuntimeError(f"async intake answered {r.status}: {await r.text()}")

        await asyncio.gather(*(worker() for _ in range(conns)))
    return time.perf_counter() - started


async def case7(b: Bench, intake: Child, drain: Child, bare: Child, sync: Child,
                backlog: int = 0) -> None:
    """Intake against the bare proxy, then drain against C/L (and a sync gateway's rate at
    the same latency, as a same-run reference on a busy machine)."""
    await b.stack.fresh()
    await b.warm(bare, intake)
    floor = await b.load("7 bare proxy, 0 ms, 50 conns (sync)", bare, CONNS)
    gw = await b.load("7a async intake, 0 ms, 50 conns (202)", intake, CONNS)
    b.add(
        Figure("7", "async intake (202), 0 ms, 50 conns, SQLite, workers 0", f"{gw.rps:.0f} rps",
               f"bare proxy sync {floor.rps:.0f} rps", ratio(gw.rps, floor.rps), ">= 1.00x",
               gw.rps >= floor.rps and gw.errors == 0,
               f"non-2xx/socket {gw.errors}; every answer a 202 queued"),
        Figure("7", "async intake p99 latency", f"{gw.p99_ms:.1f} ms",
               f"bare proxy {floor.p99_ms:.1f} ms", ratio(gw.p99_ms, floor.p99_ms)),
        Figure("7", "async intake CPU per send", f"{gw.cpu_us_per_request or 0:.0f} us",
               f"bare proxy {floor.cpu_us_per_request or 0:.0f} us",
               ratio(gw.cpu_us_per_request or 0, floor.cpu_us_per_request or 0)),
    )
    await drained(b, drain, sync)
    if backlog:
        await backlogged(b, backlog)


async def drained(b: Bench, drain: Child, sync: Child) -> None:
    """7b: queue a backlog while the provider answers in 100 ms, then time its drain."""
    await b.stack.emulator("aliyun", "ok", round(DRAIN_LATENCY_S * 1000))
    ideal = DRAIN_WORKERS / DRAIN_LATENCY_S
    name = "7 sync gateway, 100 ms, 50 conns (reference)"
    reference = await b.load(name, sync, DRAIN_WORKERS)
    b.add(Figure("7", "reference: sync sends, 100 ms, 50 conns", f"{reference.rps:.0f} rps",
                 f"C/L = {ideal:.0f}/s", ratio(reference.rps, ideal), counts=b.counts(name)))
    count = max(2000, round(ideal * b.duration * 2))
    before = await sent_so_far(drain)
    queued_in = await queue_many(drain, count)
    start, at, cpu = await sent_so_far(drain), time.perf_counter(), cpu_seconds(drain.pid)
    target = before + count
    deadline = at + count / ideal * 3 + 30
    done = start
    while done < target and time.perf_counter() < deadline:
        await asyncio.sleep(0.25)
        done = await sent_so_far(drain)
    elapsed = time.perf_counter() - at
    rate = (done - start) / elapsed if elapsed else 0.0
    per = (cpu_seconds(drain.pid) - cpu) / (done - start) * 1e6 if done > start else 0.0
    b.runs["7b outbox drain, 100 ms, workers 50"] = {
        "target": drain.name, "queued": count, "queued_in_s": round(queued_in, 2),
        "sent_during_intake": start - before, "sent_after": done - start,
        "drain_s": round(elapsed, 2), "rate": round(rate, 1), "all_sent": done >= target,
        "cpu_us_per_message": round(per, 1)}
    b.add(Figure("7", f"outbox drain, 100 ms, workers {DRAIN_WORKERS} ({count} queued)",
                 f"{rate:.0f} msg/s", f"C/L = {ideal:.0f}/s", ratio(rate, ideal), ">= 0.90x",
                 rate >= 0.9 * ideal and done >= target,
                 f"intake {count} in {queued_in:.1f} s ({start - before} sent meanwhile); "
                 f"the other {done - start} in {elapsed:.1f} s, {per:.0f} us CPU each"))
    await b.stack.healthy()


async def prefill(store_path: Path, count: int) -> float:
    """Queue ``count`` async messages straight into a gateway's SQLite store (as its intake
    would have written them, in batches of 10,000 rows); the seconds it took."""
    started = time.perf_counter()
    store = await open_store(f"sqlite:///{store_path}")
    try:
        for first in range(0, count, 10_000):
            now = time.time()
            rows = [(uuid.uuid4().hex, f"+86138{first + i:08d}")
                    for i in range(min(10_000, count - first))]
            messages_ = [{
                "id": mid, "caller": "bench", "template": "verify_code",
                "numbers": json.dumps([number]), "params": '{"code": "123456"}',
                "mode": "async", "status": "queued", "created_at": to_us(now),
                "updated_at": to_us(now), "expires_at": to_us(now + 3 * 3600),
                "next_attempt_at": to_us(now), "attempts": 0, "retries": 0}
                for mid, number in rows]
            numbers = [{"message_id": mid, "number": number, "created_at": to_us(now)}
                       for mid, number in rows]

            def write(conn: Any, m: list[dict[str, Any]] = messages_,
                      n: list[dict[str, Any]] = numbers) -> None:
                conn.execute(messages.insert(), m)
                conn.execute(recipients.insert(), n)

            await store.database.write(write)
        # The intake should not pay for the prefill's WAL: fold it into the database now.
        await store.database.read(lambda conn: conn.exec_driver_sql(
            "PRAGMA wal_checkpoint(TRUNCATE)").all())
    finally:
        await store.close()
    return time.perf_counter() - started


async def backlogged(b: Bench, count: int) -> None:
    """7c: intake p99 with ``count`` messages queued vs with none (the same process), and the
    drain rate over two windows of that backlog at 100 ms (steady: the second like the first)."""
    intake = start_async_gateway(b.stack, "gateway-backlog", 0)
    await b.stack.ready(intake)
    await b.stack.fresh()
    await b.warm(intake)
    empty = await b.load("7c intake, empty queue", intake, CONNS)
    took = await prefill(store_of(b.stack, intake.name), count)
    full = await b.load(f"7c intake, {count} queued", intake, CONNS)
    b.add(Figure("7", f"intake p99 with {count:,} queued (SQLite; prefilled in {took:.0f} s)",
                 f"{full.p99_ms:.1f} ms", f"empty queue {empty.p99_ms:.1f} ms",
                 ratio(full.p99_ms, empty.p99_ms), "<= 1.50x",
                 full.p99_ms <= 1.5 * empty.p99_ms and full.errors == 0,
                 f"{full.rps:.0f} vs {empty.rps:.0f} rps"))
    await b.stack.emulator("aliyun", "ok", round(DRAIN_LATENCY_S * 1000))
    drain = start_async_gateway(b.stack, "gateway-backlog-drain", DRAIN_WORKERS,
                                store_of(b.stack, intake.name))
    await b.stack.ready(drain)
    ideal = DRAIN_WORKERS / DRAIN_LATENCY_S
    rates = []
    for _ in range(2):
        before, at = await sent_so_far(drain), time.perf_counter()
        await asyncio.sleep(b.duration)
        rates.append((await sent_so_far(drain) - before) / (time.perf_counter() - at))
    b.add(Figure("7", f"drain with {count:,} queued, 100 ms, workers {DRAIN_WORKERS}",
                 f"{rates[1]:.0f} msg/s", f"first window {rates[0]:.0f}/s; C/L {ideal:.0f}/s",
                 ratio(rates[1], rates[0]), counts="two windows of the same backlog"))
    await b.stack.healthy()
