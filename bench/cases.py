"""The five cases of issue 4, each measured against a baseline taken in the same run."""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import LoadResult, Sample, percentile, run_builtin, run_wrk, wrk_path
from bench.procs import Child, machine_busy_seconds, tree_cpu_seconds
from bench.report import Figure, ratio
from bench.stack import Stack

# what /status calls each attempt outcome, in the order the table prints them
COUNTED = ("sent", "failed", "unknown", "short_circuited")

CONNS = 50
CONSECUTIVE_FAILURES = 5  # the shipped default the gateways here run with
HANG_TIMEOUT_S = 1.0
HANG_RUN = "4a primary hangs, 50 conns (built-in)"


@dataclass
class Bench:
    """Runs loads, keeps every raw run, and collects the figures for the table."""

    stack: Stack
    workdir: Path
    duration: float
    use_wrk: bool
    rounds: int = 3
    runs: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    others: list[float] = field(default_factory=list)  # % of a core used by other processes

    async def load(self, name: str, target: Child, conns: int, duration: float | None = None,
                   builtin: bool = False, tag: Callable[[int, bytes], Any] | None = None,
                   ) -> LoadResult:
        """One measured run against ``target``; kept under ``name`` in the results."""
        url, seconds = target.url + "/sms", duration or self.duration
        before = await self.stack.observe(target)
        cpu, machine, ours = (tree_cpu_seconds(target.pid), machine_busy_seconds(),
                              self.stack.children.cpu_seconds())
        if self.use_wrk and not builtin and wrk_path():
            result = await asyncio.to_thread(run_wrk, url, conns, seconds, self.workdir)
        else:
            result = await run_builtin(url, conns, seconds, tag)
        target.check_alive()
        if result.requests:
            used = tree_cpu_seconds(target.pid) - cpu  # with --workers: all of them
            result.cpu_us_per_request = round(used / result.requests * 1e6, 1)
        # CPU that processes outside this benchmark took meanwhile, in % of one core: on a
        # shared machine, the reason two runs of the same thing disagree.
        other = (machine_busy_seconds() - machine) - (self.stack.children.cpu_seconds() - ours)
        self.others.append(max(0.0, 100 * other / result.duration) if result.duration else 0.0)
        after = await self.stack.observe(target)
        seen: dict[str, Any] = after.since(before) if after and before else {}
        result.unknown, result.failovers = seen.get("unknown_202", 0), seen.get("failovers", 0)
        self.runs[name] = {"target": target.name, **result.as_dict(),
                           "other_cpu_pct": round(self.others[-1]), **seen}
        print(f"  {name:<40} {result.rps:7.0f} rps  p50 {result.p50_ms:7.2f} ms  "
              f"p99 {result.p99_ms:7.2f} ms  {result.cpu_us_per_request or 0:5.0f} us CPU/send  "
              f"(others {self.others[-1]:3.0f}% CPU)\n  {'':<40} {counts(self.runs[name])}",
              flush=True)
        return result

    def counts(self, *names: str) -> str:
        """The counts column of the runs behind one figure."""
        return "; ".join(f"{n}: {counts(self.runs[n])}" if len(names) > 1 else counts(self.runs[n])
                         for n in names)

    async def warm(self, *targets: Child, builtin: bool = False) -> None:
        """A short unmeasured load: pools filled, lazy imports and metadata loaded."""
        for target in targets:
            url = target.url + "/sms"
            if self.use_wrk and not builtin and wrk_path():
                await asyncio.to_thread(run_wrk, url, 10, 1, self.workdir)
            else:
                await run_builtin(url, 10, 1.0)

    def add(self, *figures: Figure) -> None:
        self.figures.extend(figures)


def counts(run: dict[str, Any]) -> str:
    """A run's faults and, for a gateway, what each provider did (from its /status)."""
    text = f"non-2xx/socket {run['errors']}"
    providers: dict[str, dict[str, Any]] = run.get("providers") or {}
    if not providers:
        return text + " (bare proxy: no 202, no failover)"
    text += f", 202 unknown {run['unknown']}, failovers {run['failovers']}"
    for name, c in providers.items():
        text += f"; {name} " + "/".join(str(c.get(k, 0)) for k in COUNTED)
    return text + " (" + "/".join(k.replace("_", "-") for k in COUNTED) + ")"


def combined(results: list[LoadResult]) -> LoadResult:
    """Rounds of one target as one result: totals, and the median of each latency figure."""
    def mid(values: list[float]) -> float:
        return statistics.median(values) if values else 0.0

    first = results[0]
    cpu = [r.cpu_us_per_request for r in results if r.cpu_us_per_request is not None]
    return LoadResult(
        first.generator, first.connections, sum(r.duration for r in results),
        sum(r.requests for r in results), sum(r.errors for r in results),
        mid([r.p50_ms for r in results]), mid([r.p90_ms for r in results]),
        mid([r.p99_ms for r in results]), max(r.max_ms for r in results),
        cpu_us_per_request=round(mid(cpu), 1) if cpu else None,
        unknown=sum(r.unknown for r in results), failovers=sum(r.failovers for r in results))


def merged(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Provider counts of several runs added up (the rounds of case 1)."""
    providers: dict[str, dict[str, Any]] = {}
    for run in runs:
        for name, c in (run.get("providers") or {}).items():
            total = providers.setdefault(name, {})
            for key, value in c.items():
                total[key] = total.get(key, 0) + value if isinstance(value, int) else value
    return {"providers": providers} if providers else {}


async def case1(b: Bench, gateway: Child, bare: Child) -> LoadResult:
    """Provider latency 0 ms, 50 connections: what the gateway costs over a bare proxy.

    Measured in alternating rounds (bare, gateway, gateway, bare, ...) so that a slow spell of
    this shared machine hits both alike. Two throughput figures, labelled as what they are: the
    pooled one (all requests of all rounds over all their seconds) and the median of the
    per-round ratios, which the target is judged on.
    """
    await b.stack.fresh()
    await b.warm(bare, gateway)
    runs: dict[str, list[LoadResult]] = {bare.name: [], gateway.name: []}
    names: dict[str, list[str]] = {bare.name: [], gateway.name: []}
    for index in range(b.rounds):
        for target in (bare, gateway) if index % 2 == 0 else (gateway, bare):
            label = "bare proxy" if target is bare else "gateway"
            name = f"1 {label}, 0 ms, 50 conns, round {index + 1}"
            runs[target.name].append(await b.load(name, target, CONNS))
            names[target.name].append(name)
    floor, gw = combined(runs[bare.name]), combined(runs[gateway.name])
    total_bare, total_gw = "1 bare proxy, 0 ms, 50 conns", "1 gateway, 0 ms, 50 conns"
    b.runs[total_bare] = {"target": bare.name, **floor.as_dict()}
    b.runs[total_gw] = {"target": gateway.name, **gw.as_dict(),
                        **merged([b.runs[n] for n in names[gateway.name]])}
    rounds = [g.rps / f.rps for f, g in zip(runs[bare.name], runs[gateway.name], strict=True)]
    middle = statistics.median(rounds)
    every = b.counts(total_gw, total_bare)
    b.add(
        Figure("1", f"throughput ratio: median of the {b.rounds} per-round ratios",
               f"{middle:.2f}x", "rounds " + " / ".join(f"{r:.2f}" for r in rounds),
               f"{middle:.2f}x", ">= 0.75x", middle >= 0.75 and gw.faults == 0, every),
        Figure("1", f"throughput pooled over {b.rounds} rounds (all sends / all seconds)",
               f"{gw.rps:.0f} rps", f"bare proxy {floor.rps:.0f} rps", ratio(gw.rps, floor.rps)),
        Figure("1", "p50 latency (median of rounds)", f"{gw.p50_ms:.1f} ms",
               f"bare proxy {floor.p50_ms:.1f} ms", ratio(gw.p50_ms, floor.p50_ms)),
        Figure("1", "p99 latency (median of rounds)", f"{gw.p99_ms:.1f} ms",
               f"bare proxy {floor.p99_ms:.1f} ms", ratio(gw.p99_ms, floor.p99_ms)),
        Figure("1", "CPU per send (process under load, median of rounds)",
               f"{gw.cpu_us_per_request or 0:.0f} us",
               f"bare proxy {floor.cpu_us_per_request or 0:.0f} us",
               ratio(gw.cpu_us_per_request or 0, floor.cpu_us_per_request or 0)),
    )
    return gw


async def case2(b: Bench, gateway: Child, bare: Child) -> None:
    """Provider latency 100 ms, 50 connections: the most a closed loop can do is C/L = 500/s."""
    await b.stack.fresh()
    await b.stack.emulator("aliyun", "ok", 100)
    ideal = CONNS / 0.1
    gw = await b.load("2 gateway, 100 ms, 50 conns", gateway, CONNS)
    floor = await b.load("2 bare proxy, 100 ms, 50 conns", bare, CONNS)
    b.add(
        Figure("2", "throughput, 100 ms, 50 conns", f"{gw.rps:.0f} rps", f"C/L = {ideal:.0f} rps",
               ratio(gw.rps, ideal), ">= 0.90x", gw.rps >= 0.9 * ideal and gw.faults == 0,
               b.counts("2 gateway, 100 ms, 50 conns")),
        Figure("2", "bare proxy, same load", f"{floor.rps:.0f} rps", f"C/L = {ideal:.0f} rps",
               ratio(floor.rps, ideal), counts=b.counts("2 bare proxy, 100 ms, 50 conns")),
    )
    await b.stack.healthy()


async def case3(b: Bench, gateway: Child, no_breaker: Child) -> None:
    """Primary refusing connections, backup healthy: what a refused connect + failover adds.

    Each is compared with the same gateway healthy, measured just before at the same load: on
    a noisy machine, case 1's figure from a minute earlier is no baseline for a few ms. Here
    failovers are the point: the target allows them, not 202s or non-2xx answers. Breakers and
    counters are reset before 3b too: it starts closed, pays its 5 failures, then skips.
    """
    await b.stack.fresh()
    await b.warm(no_breaker)
    one = await b.load("3 gateway healthy, 0 ms, 1 conn", gateway, 1)
    fifty = await b.load("3 gateway healthy, 0 ms, 50 conns", gateway, CONNS)
    await b.stack.fresh()
    await b.stack.emulator("aliyun", "down")
    raw = await b.load("3a primary down, breaker off, 1 conn", no_breaker, 1)
    await b.stack.fresh()
    await b.stack.emulator("aliyun", "down")
    on = await b.load("3b primary down, breaker on, 50 conns", gateway, CONNS)
    added_raw, added_on = raw.p50_ms - one.p50_ms, on.p50_ms - fifty.p50_ms
    b.add(
        Figure("3a", "p50, refused connect + failover on every send (breaker off), 1 conn",
               f"{raw.p50_ms:.2f} ms", f"healthy, 1 conn {one.p50_ms:.2f} ms",
               f"{ratio(raw.p50_ms, one.p50_ms)} (+{added_raw:.2f} ms)", "< +5 ms",
               added_raw < 5 and raw.errors + raw.unknown == 0,
               b.counts("3a primary down, breaker off, 1 conn")),
        Figure("3b", "p50, breaker on (opens after 5), 50 conns", f"{on.p50_ms:.1f} ms",
               f"healthy, 50 conns {fifty.p50_ms:.1f} ms",
               f"{ratio(on.p50_ms, fifty.p50_ms)} ({added_on:+.1f} ms)", "< +5 ms",
               added_on < 5 and on.errors + on.unknown == 0,
               b.counts("3b primary down, breaker on, 50 conns")),
    )
    await b.stack.healthy()


def _paid(status: int, body: bytes) -> bool:
    """Whether this send waited out the primary's timeout (from the response's attempts)."""
    try:
        attempts = json.loads(body).get("attempts") or []
    except ValueError:
        return False
    return any(a.get("provider") == "aliyun" and a.get("outcome") != "skipped"
               and (a.get("duration_ms") or 0) >= 0.9 * HANG_TIMEOUT_S * 1000 for a in attempts)


def _after_open(samples: list[Sample]) -> tuple[int, int, list[float]]:
    """(paid, paid after the breaker opened, latencies of sends begun after the last payer)."""
    paid = sorted((s for s in samples if s.tag), key=lambda s: s.end)
    if len(paid) < CONSECUTIVE_FAILURES:
        return len(paid), 0, []
    opened = paid[CONSECUTIVE_FAILURES - 1].end  # answered just after the breaker opened
    late = sum(1 for s in paid if s.start > opened)
    last = paid[-1].end
    return len(paid), late, [s.ms for s in samples if s.start > last]


async def case4(b: Bench, gateway: Child) -> None:
    """Primary hangs (timeout 1 s), backup healthy: who pays the timeout, and p99 after."""
    await b.stack.fresh()
    await b.warm(gateway, builtin=True)
    base = await b.load("4 gateway healthy, 50 conns (built-in)", gateway, CONNS, builtin=True)
    await b.stack.emulator("aliyun", "hang")
    hang = await b.load(HANG_RUN, gateway, CONNS,
                        b.duration + HANG_TIMEOUT_S, builtin=True, tag=_paid)
    paid, late, after = _after_open(hang.samples)
    after_p99 = percentile(after, 99)
    b.runs[HANG_RUN].update(
        paid_timeout=paid, paid_after_open=late, after_open_requests=len(after),
        after_open_p99_ms=round(after_p99, 2))
    await b.stack.admin(gateway, "aliyun", "reset")  # closed again: the same hang, one client
    serial = await b.load("4b primary hangs, 1 conn (built-in)", gateway, 1,
                          CONSECUTIVE_FAILURES * HANG_TIMEOUT_S + 2, builtin=True, tag=_paid)
    paid_serial = sum(1 for s in serial.samples if s.tag)
    b.runs["4b primary hangs, 1 conn (built-in)"]["paid_timeout"] = paid_serial
    b.add(
        Figure("4a", "sends that paid the 1 s timeout, 50 conns", str(paid),
               f"{CONNS} in flight when it hung; threshold {CONSECUTIVE_FAILURES}",
               f"{late} began after open", "none after open", late == 0 and paid > 0,
               b.counts(HANG_RUN)),
        Figure("4b", "sends that paid the 1 s timeout, 1 conn", str(paid_serial),
               f"consecutive_failures {CONSECUTIVE_FAILURES}",
               ratio(paid_serial, CONSECUTIVE_FAILURES), f"<= {CONSECUTIVE_FAILURES}",
               paid_serial <= CONSECUTIVE_FAILURES and serial.errors + serial.unknown == 0,
               b.counts("4b primary hangs, 1 conn (built-in)")),
        Figure("4a", "p99 after the breaker opened, 50 conns", f"{after_p99:.1f} ms",
               f"healthy, same generator {base.p99_ms:.1f} ms", ratio(after_p99, base.p99_ms),
               "<= 1.50x", bool(after) and after_p99 <= 1.5 * base.p99_ms
               and hang.errors + hang.unknown == 0, b.counts(HANG_RUN)),
    )
    await b.stack.healthy()


async def case5(b: Bench, gateway: Child, bare: Child) -> None:
    """1,000 concurrent sends, 200 ms provider latency: peak memory of the gateway process."""
    await b.stack.fresh()
    await b.stack.emulator("aliyun", "ok", 200)
    idle = b.stack.memory_mb(gateway)
    gw = await b.load("5 gateway, 200 ms, 1000 conns", gateway, 1000)
    peak = b.stack.memory_mb(gateway)
    floor = await b.load("5 bare proxy, 200 ms, 1000 conns", bare, 1000)
    bare_peak = b.stack.memory_mb(bare)
    b.runs["5 gateway, 200 ms, 1000 conns"].update(memory_mb=peak, idle_memory_mb=idle)
    b.runs["5 bare proxy, 200 ms, 1000 conns"]["memory_mb"] = bare_peak
    b.add(
        Figure("5", "peak RSS (VmHWM), 200 ms, 1000 conns", f"{peak['VmHWM']:.1f} MB",
               f"bare proxy {bare_peak['VmHWM']:.1f} MB; gateway idle {idle['VmRSS']:.1f} MB",
               ratio(peak["VmHWM"], bare_peak["VmHWM"]), "< 80 MB", peak["VmHWM"] < 80),
        Figure("5", "errors: non-2xx + socket + 202 unknown + failovers", str(gw.faults),
               f"of {gw.requests} sends", f"bare proxy {floor.errors}", "0", gw.faults == 0,
               b.counts("5 gateway, 200 ms, 1000 conns", "5 bare proxy, 200 ms, 1000 conns")),
        Figure("5", "throughput, 200 ms, 1000 conns", f"{gw.rps:.0f} rps",
               f"bare proxy {floor.rps:.0f} rps", ratio(gw.rps, floor.rps)),
    )
    await b.stack.healthy()
