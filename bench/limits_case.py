"""Case 9 (issue 13): what the limits cost. The same gateway twice, each on a SQLite file store
(the shipped default): one with the shipped default rules (``config.yaml``'s ``limits:``, Aliyun's
verification-code limits: 1/min, 5/h, 10/day per number), one with none, measured in alternating
rounds at 50 connections. Every send goes to a random number (as in every case), so the rules
count in full: one bucket per number, three windows, and a hit written per send.

The cost per check is given twice: the gateway's CPU per send with rules minus without (what a
process really pays, writer hop included), and the store's check alone, in-process: the check and
its insert, run on a SQLite connection holding 100,000 past hits.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Connection, create_engine, event

from bench.cases import CONNS, Bench, combined
from bench.loadgen import LoadResult
from bench.procs import Child
from bench.report import Figure, ratio
from gateway.store.limits import LimitCheck, LimitWindow, _admit
from gateway.store.migrate import upgrade_connection
from gateway.store.schema import limit_hits, to_us
from gateway.yamlsrc import parse_duration

ROOT = Path(__file__).resolve().parent.parent
STORE = {"url": "sqlite:///gw.db"}  # beside each gateway's config, in its own folder
TARGET = 0.90
PAST_HITS = 100_000
CHECKS = 5_000


def default_rules() -> list[dict[str, Any]]:
    """The ``limits:`` rules the shipped config.yaml turns on."""
    shipped = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    rules: list[dict[str, Any]] = shipped["limits"]
    return rules


async def case9(b: Bench, limited: Child, unlimited: Child) -> None:
    """Throughput with the default rules over the same run without limits."""
    await b.stack.fresh()
    await b.warm(limited, unlimited)
    runs: dict[str, list[LimitedRun]] = {limited.name: [], unlimited.name: []}
    for index in range(b.rounds):
        for target in (limited, unlimited) if index % 2 == 0 else (unlimited, limited):
            label = "rules on" if target is limited else "no limits"
            name = f"9 gateway, {label}, 0 ms, 50 conns, round {index + 1}"
            result = await b.load(name, target, CONNS)
            runs[target.name].append(LimitedRun(result, b.runs[name]))
    on, off = combined([r.result for r in runs[limited.name]]), combined(
        [r.result for r in runs[unlimited.name]])
    rounds = [a.result.rps / c.result.rps
              for a, c in zip(runs[limited.name], runs[unlimited.name], strict=True)]
    middle = statistics.median(rounds)
    refused = sum(r.answers.get("429", 0) for r in runs[limited.name])
    other = sum(r.result.errors for r in runs[limited.name]) - refused + sum(
        r.result.errors for r in runs[unlimited.name])
    added = (on.cpu_us_per_request or 0) - (off.cpu_us_per_request or 0)
    alone = check_cost()
    b.runs["9 limit check alone (in-process)"] = alone
    note = (f"rules on: {on.requests} sends, {refused} refused by a rule (429: a random number "
            f"drawn twice within its minute); non-2xx otherwise {other}")
    b.add(
        Figure("9", f"throughput, default limits on vs off: median of the {b.rounds} "
               "per-round ratios", f"{middle:.2f}x",
               "rounds " + " / ".join(f"{r:.2f}" for r in rounds), f"{middle:.2f}x",
               f">= {TARGET:.2f}x", middle >= TARGET and other == 0, note),
        Figure("9", "throughput pooled, rules on", f"{on.rps:.0f} rps",
               f"no limits {off.rps:.0f} rps", ratio(on.rps, off.rps)),
        Figure("9", "cost per check: CPU per send, rules on minus off", f"{added:.0f} us",
               f"no limits {off.cpu_us_per_request or 0:.0f} us/send",
               ratio(on.cpu_us_per_request or 0, off.cpu_us_per_request or 0)),
        *(Figure("9", f"cost per check: the store's check + insert alone, {what}",
                 f"{c['us_per_check']:.1f} us",
                 f"{c['statements']} statements, {c['vm_steps']} SQLite VM steps; "
                 f"{alone['past_hits']:,} past hits", "-")
          for what, c in (("a new number", alone["new_number"]),
                          ("a number with 3 hits today", alone["number_with_3_hits_today"]))),
    )


class LimitedRun:
    """One measured run and what the gateway answered during it."""

    def __init__(self, result: LoadResult, raw: dict[str, Any]) -> None:
        self.result = result
        self.answers: dict[str, int] = raw.get("answers") or {}


def check_cost(past: int = PAST_HITS, checks: int = CHECKS) -> dict[str, Any]:
    """CPU per check of the default rules' check and insert, straight on a SQLite connection
    (no writer thread, no event loop) holding ``past`` hits out of every window, for numbers
    never seen (what random traffic costs) and for numbers with three hits earlier today (every
    window is read: the full path)."""
    rules = default_rules()
    windows = tuple(LimitWindow(str(i), int(r["max"]), parse_duration(r["window"]))
                    for i, r in enumerate(rules))
    now = to_us(time.time())
    drawn = random.sample(range(10**8), 2 * checks)
    fresh, seen = drawn[:checks], drawn[checks:]
    out: dict[str, Any] = {"past_hits": past, "checks": checks}
    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine(f"sqlite:///{folder}/cost.db")

        @event.listens_for(engine, "connect")
        def _connect(raw: Any, _record: Any) -> None:  # as the store's writer (engine.py)
            raw.isolation_level = None
            raw.execute("PRAGMA journal_mode = WAL")
            raw.execute("PRAGMA synchronous = NORMAL")

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        with engine.connect() as conn:
            with conn.begin():
                upgrade_connection(conn, "bench")
                _fill(conn, past, [_bucket(n) for n in seen], now)
            for name, numbers in (("new_number", fresh), ("number_with_3_hits_today", seen)):
                with conn.begin():
                    started = time.process_time()
                    for n in numbers:
                        assert _admit(conn, [LimitCheck(_bucket(n), 1, windows)], "m",
                                      now).admitted
                    spent = time.process_time() - started
                out[name] = {"us_per_check": round(spent / checks * 1e6, 1),
                             **_counted(conn, _bucket(numbers[0]), windows, now + 60_000_000)}
        engine.dispose()
    return out


def _bucket(n: int) -> str:
    return f"number|verify_code|+86138{n:08d}"


def _counted(conn: Connection, bucket: str, windows: tuple[LimitWindow, ...],
             now: int) -> dict[str, int]:
    """Statements and SQLite VM steps of one more check of ``bucket``."""
    statements, steps = [0], [0]
    raw: Any = conn.connection.dbapi_connection
    raw.set_trace_callback(lambda _sql: statements.__setitem__(0, statements[0] + 1))
    raw.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1) or 0, 1)
    try:
        with conn.begin():
            _admit(conn, [LimitCheck(bucket, 1, windows)], "m", now)
    finally:
        raw.set_progress_handler(None, 1)
        raw.set_trace_callback(None)
    return {"statements": statements[0] - 2, "vm_steps": steps[0]}  # not BEGIN, COMMIT


def _fill(conn: Connection, past: int, today: list[str], now: int) -> None:
    """``past`` hits two days ago (1,000 numbers, 100 each), and three earlier today (2, 3 and
    4 hours ago) for each bucket of ``today``."""
    start = now - to_us(2 * 86400)
    conn.execute(limit_hits.insert(), [
        {"bucket": f"number|verify_code|+86139{i % 1000:08d}", "at": start + i,
         "seq": i // 1000 + 1} for i in range(past)])
    conn.execute(limit_hits.insert(), [
        {"bucket": bucket, "at": now - to_us(hours * 3600), "seq": 5 - hours}
        for bucket in today for hours in (4, 3, 2)])
