"""The message store's cases (issue 10): "6" store on vs store memory, "11" a million records.

Case 6 runs three processes in alternating rounds at 0 ms provider latency, 50 connections: the
gateway on its shipped default store (SQLite, group commit), the same gateway on the in-process
``memory`` store, and the bare proxy. Case 11 bulk-loads a million records straight into a
SQLite file through the store's own tables (the schema is migrated by the store first), then
measures ``GET /sms?to=…&since=…``, the file size per record, and sends during a retention pass.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import statistics
import time
from pathlib import Path

import aiohttp

from bench.cases import CONNS, Bench, combined
from bench.loadgen import LoadResult, percentile
from bench.procs import Child
from bench.report import Figure, ratio
from gateway.store import upgrade

STORE_ON = {"url": "sqlite:///data/sms-gateway.db"}  # the shipped default
MEMORY = {"url": "memory"}
RECORDS = 1_000_000
NUMBERS = 100_000  # distinct recipients: ten records each
SPAN_DAYS = 40  # records created over the last 40 days; retention 30d deletes a quarter
QUERIES = 400
DAY = 86400.0


async def case6(b: Bench, memory: Child, stored: Child, bare: Child) -> None:
    """Throughput and CPU per send, store on (SQLite) vs memory store vs the bare proxy."""
    await b.stack.fresh()
    await b.warm(bare, memory, stored)
    label = {bare.name: "bare proxy", memory.name: "gateway, store memory",
             stored.name: "gateway, store on (SQLite)"}
    runs: dict[str, list[LoadResult]] = {c.name: [] for c in (bare, memory, stored)}
    orders = ((bare, memory, stored), (stored, memory, bare), (memory, bare, stored))
    for index in range(b.rounds):
        for target in orders[index % len(orders)]:
            name = f"6 {label[target.name]}, 0 ms, {CONNS} conns, round {index + 1}"
            runs[target.name].append(await b.load(name, target, CONNS))
    on_vs_memory = [s.rps / m.rps for s, m in zip(runs[stored.name], runs[memory.name],
                                                   strict=True)]
    on_vs_bare = [s.rps / f.rps for s, f in zip(runs[stored.name], runs[bare.name], strict=True)]
    memory_vs_bare = [m.rps / f.rps for m, f in zip(runs[memory.name], runs[bare.name],
                                                    strict=True)]
    on, mem, floor = (combined(runs[c.name]) for c in (stored, memory, bare))
    for target, result in ((stored, on), (memory, mem), (bare, floor)):
        b.runs[f"6 {label[target.name]}, 0 ms, {CONNS} conns"] = {
            "target": target.name, **result.as_dict()}
    a, c, d = (statistics.median(x) for x in (on_vs_memory, on_vs_bare, memory_vs_bare))

    def rounds(values: list[float]) -> str:
        return "rounds " + " / ".join(f"{v:.2f}" for v in values)

    faults = on.errors + on.unknown + on.failovers
    b.add(
        Figure("6", "throughput, store on (SQLite) / store memory, median of rounds",
               f"{on.rps:.0f} rps", f"memory {mem.rps:.0f} rps; {rounds(on_vs_memory)}",
               f"{a:.2f}x", ">= 0.90x", a >= 0.9 and faults == 0),
        Figure("6", "throughput, store on (SQLite) / bare proxy, median of rounds",
               f"{on.rps:.0f} rps", f"bare proxy {floor.rps:.0f} rps; {rounds(on_vs_bare)}",
               f"{c:.2f}x", ">= 0.70x", c >= 0.7 and faults == 0),
        Figure("6", "throughput, store memory / bare proxy, median of rounds",
               f"{mem.rps:.0f} rps", f"bare proxy {floor.rps:.0f} rps; {rounds(memory_vs_bare)}",
               f"{d:.2f}x"),
        Figure("6", "CPU per send, store on (SQLite)", f"{on.cpu_us_per_request or 0:.0f} us",
               f"memory {mem.cpu_us_per_request or 0:.0f} us",
               ratio(on.cpu_us_per_request or 0, mem.cpu_us_per_request or 0)),
        Figure("6", "CPU per send, store memory", f"{mem.cpu_us_per_request or 0:.0f} us",
               f"bare proxy {floor.cpu_us_per_request or 0:.0f} us",
               ratio(mem.cpu_us_per_request or 0, floor.cpu_us_per_request or 0)),
        Figure("6", "p99 latency, store on (SQLite)", f"{on.p99_ms:.1f} ms",
               f"memory {mem.p99_ms:.1f} ms", ratio(on.p99_ms, mem.p99_ms)),
    )


# -- case 11 ---------------------------------------------------------------------------------

def _number(i: int) -> str:
    return f"+86138{i % NUMBERS * 7 % 10**8:08d}"


def bulk_load(path: Path, count: int, now: float) -> float:
    """``count`` final records (each with its recipient and attempt) created over the last
    SPAN_DAYS days, written with the driver's executemany in large transactions; seconds."""
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -200000")
    step = SPAN_DAYS * DAY / count
    chunk = 50_000
    for first in range(0, count, chunk):
        ids = range(first, min(count, first + chunk))
        rows = []
        for i in ids:
            created = round((now - SPAN_DAYS * DAY + i * step) * 1e6)
            rows.append((f"{i:032x}", _number(i), created))
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO messages (id, caller, template, numbers, params, mode, status, "
            "created_at, updated_at, final_at, attempts, provider, provider_message_id) "
            "VALUES (?, '', 'verify_code', json_array(?), NULL, 'sync', 'sent', ?, ?, ?, 1, "
            "'aliyun', ?)", ((m, n, c, c + 900, c + 900, f"p{m[-12:]}") for m, n, c in rows))
        conn.executemany(
            "INSERT INTO recipients (message_id, number, created_at) VALUES (?, ?, ?)", rows)
        conn.executemany(
            "INSERT INTO attempts (message_id, seq, provider, started_at, finished_at, outcome) "
            "VALUES (?, 1, 'aliyun', ?, ?, 'accepted')", ((m, c, c + 900) for m, _, c in rows))
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - started


async def _queries(url: str, now: float, count: int) -> list[float]:
    """``count`` sequential ``GET /sms?to=…&since=…`` (the last 7 days); milliseconds each."""
    rng = random.Random(11)
    since = int(now - 7 * DAY)
    out = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            number = _number(rng.randrange(NUMBERS)).replace("+", "%2B")
            started = time.perf_counter()
            async with session.get(f"{url}/sms?to={number}&since={since}&limit=50") as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"GET /sms: {resp.status} {body[:200]!r}")
            out.append((time.perf_counter() - started) * 1000)
    return out


async def _old_left(url: str, cutoff: float) -> bool:
    async with aiohttp.ClientSession() as session, session.get(
            f"{url}/sms?until={int(cutoff)}&limit=1") as resp:
        return bool(json.loads(await resp.read())["items"])


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def case11(b: Bench) -> None:
    """A million records: list query p99, bytes per record, sends during a retention pass."""
    folder = b.workdir / "gateway-1m"
    (folder / "data").mkdir(parents=True)
    db = folder / "data" / "sms-gateway.db"
    await upgrade(f"sqlite:///{db}")  # the store's own schema, migrated by the store
    now = time.time()
    seconds = await asyncio.to_thread(bulk_load, db, RECORDS, now)
    per_record = _size(db) / RECORDS
    print(f"  11 bulk-loaded {RECORDS} records in {seconds:.0f} s "
          f"({per_record:.0f} bytes per record)", flush=True)

    keep_all = {**STORE_ON, "retention": "3650d"}
    gw = b.stack.start_gateway("gateway-1m", storage=keep_all, folder=folder)
    await b.stack.ready(gw)
    await b.stack.fresh()
    await _queries(gw.url, now, 20)  # warm: the reader pool connected, pages cached
    times = await _queries(gw.url, now, QUERIES)
    p50, p99 = percentile(times, 50), percentile(times, 99)
    print(f"  11 GET /sms?to=&since= over {RECORDS} records: p50 {p50:.2f} ms, "
          f"p99 {p99:.2f} ms", flush=True)
    b.stack.stop(gw)

    # The same file with retention 30d: the pass starts with the process and deletes the
    # quarter of the records older than that, in batches, while sends come in.
    swept = b.stack.start_gateway("gateway-1m-retention",
                                  storage={**STORE_ON, "retention": "30d"}, folder=folder)
    await b.stack.ready(swept)
    cutoff = time.time() - 30 * DAY
    during = await b.load("11 sends during a retention pass, 10 conns", swept, 10,
                          builtin=True)
    still = await _old_left(swept.url, cutoff)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 180
    while await _old_left(swept.url, cutoff):
        if loop.time() > give_up:
            raise RuntimeError("the retention pass did not finish in 3 minutes")
        await asyncio.sleep(0.5)
    after = await b.load("11 sends without a retention pass, 10 conns", swept, 10,
                         builtin=True)
    b.stack.stop(swept)
    b.runs["11 GET /sms?to=&since=, 1M records"] = {
        "records": RECORDS, "queries": QUERIES, "p50_ms": round(p50, 2), "p99_ms": round(p99, 2),
        "bytes_per_record": round(per_record), "bulk_load_s": round(seconds, 1),
        "pass_still_running_after_load": still}
    b.add(
        Figure("11", f"GET /sms?to=&since= p99, {RECORDS:,} records", f"{p99:.1f} ms",
               f"p50 {p50:.1f} ms, {QUERIES} queries", "", "< 20 ms", p99 < 20),
        Figure("11", "store file size per record (message + recipient + attempt)",
               f"{per_record:.0f} bytes", f"{_size(db) / 2**20:.0f} MB now", ""),
        Figure("11", "send p99 during a retention pass, 10 conns", f"{during.p99_ms:.1f} ms",
               f"without {after.p99_ms:.1f} ms"
               + ("" if still else " (the pass ended before the load did)"),
               ratio(during.p99_ms, after.p99_ms), "<= 1.50x",
               during.p99_ms <= 1.5 * after.p99_ms and during.errors == 0),
    )
