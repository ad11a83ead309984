"""The soak: steady load on a real gateway process while its providers misbehave in turn.

    python -m bench.soak [--seconds N] [--senders N]      (make soak; SOAK_SECONDS=N)

Starts the Aliyun and Huawei emulators in this process and ``python -m gateway`` as a child (so
its memory can be sampled), all on 127.0.0.1. A few dozen senders keep sending while the
emulators cycle through ok / fail / throttle / hang / down / slow, alone and together. Then it
checks, and prints, what the gateway promises (SPEC section 3):

- every request got an answer, with a status from the SPEC table, and never a 500;
- every 200 for an ``on_unknown: stop`` template was accepted by exactly one emulator, under our
  id (Aliyun ``OutId``, Huawei ``extend``); for ``failover`` templates at least one;
- no emulator accepted anything answered 502, 503, 422 or 429;
- an Idempotency-Key repeat replays the first answer and sends nothing;
- the gateway's memory is flat after warm-up, its log has no traceback, and it stops with exit
  0 on SIGTERM;
- hostile traffic (bench/soak_hostile.py) gets its answer: lone surrogates and NaN are a
  problem+json 400/422, cut-off bodies count as ``aborted`` (never 500), slow and idle sockets
  are closed by the gateway, an alias bomb on reload is rejected and the gateway keeps serving;
  and ``/metrics`` never counted a 500.

Exits 1 when any of these fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.configs import gateway_config, provider
from bench.procs import die_with_parent, free_port, memory_kb
from bench.soak_async import async_body, drained
from bench.soak_hostile import (
    BODIES,
    JSON,
    PROBLEM,
    Hostile,
    final_metrics,
    hostile_report,
    hostile_traffic,
)
from gateway.emulators import EMULATOR_CREDENTIALS, EmulatorServer

ROOT = Path(__file__).resolve().parent.parent
TABLE = frozenset({200, 202, 400, 401, 409, 413, 415, 422, 429, 502, 503})
SCHEDULE = [  # (aliyun, huawei); "slow" is the latency mode at 300 ms, under the 1 s timeout
    ("ok", "ok"), ("fail", "ok"), ("ok", "throttle"), ("hang", "ok"), ("down", "ok"),
    ("slow", "fail"), ("throttle", "throttle"), ("ok", "down"), ("down", "down"),
    ("hang", "hang"), ("fail", "fail"), ("slow", "slow"), ("ok", "hang"), ("ok", "ok"),
]
API_KEY = "soak-" + uuid.uuid4().hex
BREAKER = {"consecutive_failures": 5, "failure_rate": 0.5, "minimum_calls": 20, "window": "10s",
           "open_for": "2s", "max_open_for": "8s", "half_open_probes": 1}
# Small on purpose, so the slow and idle sockets are cut off many times in a run. The cap leaves
# room for every sender's connection and the hostile sockets: it is never reached.
HEADER_TIMEOUT = BODY_TIMEOUT = 2.0
SPARE_CONNECTIONS = 24


def soak_config(log: Path, urls: dict[str, str], senders: int) -> str:
    """The soak gateway's config: its API key and provider secrets come from the environment."""
    return gateway_config(
        server={"api_keys": ["${SOAK_API_KEY}"], "max_recipients": 10,
                "shutdown_timeout": "10s", "header_timeout": f"{HEADER_TIMEOUT:g}s",
                "body_timeout": f"{BODY_TIMEOUT:g}s",
                "max_connections": senders + SPARE_CONNECTIONS},
        logging={"level": "INFO", "file": str(log), "max_bytes": 20_000_000, "backups": 3},
        defaults={"region": "CN", "timeout": "1s", "deadline": "3s", "breaker": BREAKER},
        templates=("notice", "verify_code"), on_unknown={"notice": "stop"},
        providers=[
            provider("aliyun", priority=1, endpoint=urls["aliyun"], options={"sign_name": "Soak"},
                     templates=("notice", "verify_code")),
            provider("huawei", priority=2, endpoint=urls["huawei"],
                     options={"sender": "csms12345678"}, templates=("notice", "verify_code")),
        ],
        # a file, as shipped: records and kept answers live on disk, not in the process
        storage={"url": f"sqlite:///{log.parent / 'soak.db'}"})


@dataclass(slots=True)
class Result:
    """One request and its answer."""

    kind: str  # notice | verify_code | replay | bad:<what> | hostile:<what>
    phase: int
    status: int | None = None  # None: no answer at all
    error: str = ""
    id: str | None = None
    provider: str | None = None
    seconds: float = 0.0
    expect: int | None = None  # the status a bad request must get
    replay_of: Result | None = None
    replayed: bool = False
    keyed: bool = False  # sent with an Idempotency-Key
    at: float = 0.0  # seconds into the run when the answer came
    content_type: str = ""


@dataclass
class Soak:
    """The run's state: where the gateway is, what was sent, what the emulators did."""

    url: str
    emulators: dict[str, EmulatorServer]
    keyed: float  # the share of sends with an Idempotency-Key
    started: float = field(default_factory=time.monotonic)
    phase: int = 0
    results: list[Result] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, KiB)


def number() -> str:
    return f"+86{random.choice(['138', '139', '150', '186'])}{random.randrange(10**8):08d}"


def body(template: str) -> dict[str, Any]:
    params = {"code": f"{random.randrange(10**6):06d}"} if template == "verify_code" else {
        "name": random.choice(["Ann", "Bo", "Chen"]), "time": "9:00"}
    return {"to": [number()], "template": template, "params": params}


BAD: dict[str, tuple[int, Any, dict[str, str]]] = {  # what -> (status, body, headers)
    "json": (400, b"{not json", {"Content-Type": "application/json"}),
    "type": (415, b"to=1", {"Content-Type": "text/plain"}),
    "number": (422, {"to": ["12"], "template": "notice", "params": {"name": "A", "time": "B"}},
               {}),
    "key": (401, {"to": ["+8613800138000"], "template": "notice"},
            {"Authorization": "Bearer wrong"}),
    "many": (413, {"to": [f"+861380013{i:04d}" for i in range(11)], "template": "notice",
                   "params": {"name": "A", "time": "B"}}, {}),
}


async def post(session: aiohttp.ClientSession, soak: Soak, result: Result, payload: Any,
               headers: dict[str, str]) -> dict[str, Any] | None:
    """Send one request and fill in ``result``; the answer's JSON when there is one."""
    started = time.monotonic()
    kwargs: dict[str, Any] = {"data": payload} if isinstance(payload, bytes) else {
        "json": payload}
    try:
        async with session.post(f"{soak.url}/sms", headers=headers, **kwargs) as response:
            result.status = response.status
            result.replayed = response.headers.get("Idempotent-Replayed") == "true"
            result.content_type = response.content_type
            answer: dict[str, Any] = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        result.error = type(exc).__name__
        answer = {}
    result.seconds = time.monotonic() - started
    result.at = time.monotonic() - soak.started
    result.id, result.provider = answer.get("id"), answer.get("provider")
    soak.results.append(result)
    return answer


async def sender(soak: Soak, session: aiohttp.ClientSession, until: float) -> None:
    """One caller: mostly notices, some OTPs, a few repeats, bad and hostile requests."""
    auth = {"Authorization": f"Bearer {API_KEY}"}
    last: tuple[Result, dict[str, Any], dict[str, str]] | None = None
    while time.monotonic() < until:
        roll = random.random()
        if roll < 0.03:
            what = random.choice(list(BAD))
            status, payload, headers = BAD[what]
            result = Result(f"bad:{what}", soak.phase, expect=status)
            await post(session, soak, result, payload, {**auth, **headers})
        elif roll < 0.05:
            what = random.choice(list(BODIES))
            status, raw = BODIES[what]
            result = Result(f"hostile:{what}", soak.phase, expect=status)
            await post(session, soak, result, raw, {**auth, **JSON})
        elif roll < 0.10 and last is not None:  # the same key and body again
            first, payload, headers = last
            result = Result("replay", soak.phase, replay_of=first)
            await post(session, soak, result, payload, headers)
            if not result.replayed:  # sent anew (the first sent nothing): now it is the first
                last = (result, payload, headers)
        elif roll < 0.15:  # async (bench/soak_async.py): 202 queued, checked after the drain
            result = Result("async", soak.phase, expect=202)
            await post(session, soak, result, async_body(body("notice")), auth)
        else:
            template = "verify_code" if roll < 0.30 else "notice"
            payload, headers = body(template), dict(auth)
            keyed = random.random() < soak.keyed
            if keyed:
                headers["Idempotency-Key"] = uuid.uuid4().hex
            result = Result(template, soak.phase, keyed=keyed)
            await post(session, soak, result, payload, headers)
            if keyed:
                last = (result, payload, headers)


async def chaos(soak: Soak, phase_seconds: float, until: float) -> None:
    """Walk the schedule: each phase sets both emulators' modes."""
    index = 0
    while time.monotonic() < until:
        soak.phase = index
        for kind, mode in zip(("aliyun", "huawei"), SCHEDULE[index % len(SCHEDULE)],
                              strict=True):
            server = soak.emulators[kind]
            if mode == "slow":
                await server.apply("latency", 300)
            else:
                await server.apply(mode, 0)
        await asyncio.sleep(min(phase_seconds, max(0.0, until - time.monotonic())))
        index += 1


async def sample_rss(soak: Soak, pid: int, started: float, until: float) -> None:
    while time.monotonic() < until:
        with contextlib.suppress(OSError):
            soak.rss.append((time.monotonic() - started, memory_kb(pid).get("VmRSS", 0)))
        await asyncio.sleep(1.0)


# -- the checks ------------------------------------------------------------------------------

def accepted(soak: Soak, message_id: str | None) -> dict[str, int]:
    """How often each emulator accepted this id."""
    if message_id is None:
        return {}
    counts = {k: s.state.accepted.get(message_id, 0) for k, s in soak.emulators.items()}
    return {k: n for k, n in counts.items() if n}


def check(soak: Soak) -> tuple[list[str], Counter[str]]:
    """Every invariant over every result: the failures found, and what was counted."""
    failures: list[str] = []
    seen: Counter[str] = Counter()

    def fail(what: str, result: Result) -> None:
        seen[f"violation: {what}"] += 1
        if seen[f"violation: {what}"] <= 5:
            failures.append(f"{what}: {result}")

    for r in soak.results:
        if r.status is None:
            fail("no answer", r)
            continue
        if r.status not in TABLE:
            fail(f"status {r.status} is not in the SPEC table", r)
        if r.expect is not None:
            if r.status != r.expect:
                fail(f"{r.kind} answered {r.status}, not {r.expect}", r)
            elif r.kind.startswith("hostile:") and r.content_type != PROBLEM:
                fail(f"{r.kind} answered {r.content_type}, not {PROBLEM}", r)
            continue
        got = accepted(soak, r.id)
        if r.kind == "replay" and r.replay_of is not None:
            check_replay(r, r.replay_of, fail, seen)
            continue
        if r.status == 200:
            total = sum(got.values())
            if r.kind == "notice":
                seen["exactly-once checked"] += 1
                if got != {r.provider: 1}:
                    fail(f"200 for an on_unknown: stop send, but emulators accepted {got}", r)
            else:
                seen["at-least-once checked"] += 1
                seen["failover duplicates"] += total > 1
                if total < 1:
                    fail("200 but no emulator accepted it", r)
        elif r.status in (502, 503, 422, 429):
            seen["nothing-sent checked"] += 1
            if got:
                fail(f"{r.status} but emulators accepted it: {got}", r)
        elif r.status == 202:
            seen["202 in fact delivered"] += bool(got)
        else:
            fail(f"a valid send answered {r.status}", r)
    return failures, seen


def check_replay(r: Result, first: Result, fail: Any, seen: Counter[str]) -> None:
    seen["replays"] += 1
    if first.status in (200, 202, 422):  # final answers are kept and replayed
        if (r.status, r.id, r.replayed) != (first.status, first.id, True):
            fail(f"repeat of a {first.status} was not replayed", r)
    elif r.replayed:
        fail(f"repeat of a {first.status} was replayed instead of sent again", r)


# Records and the kept Idempotency-Key answers live in the store's SQLite file, not in the
# process: a kept answer costs no resident memory (KEPT_KIB), and the allowance is the slack:
# SQLite's page caches, the log queue topping up, allocator arenas.
KEPT_KIB = 0.0
KEPT_CAPACITY = 100_000
SLACK_KIB = 16 * 1024


def kept_answers(soak: Soak, before: float) -> int:
    """Answers the idempotency store took on up to ``before`` (seconds into the run)."""
    kept = sum(1 for r in soak.results if r.at <= before and r.status in (200, 202, 422)
               and (r.keyed or (r.kind == "replay" and not r.replayed)))
    return min(kept, KEPT_CAPACITY)


def memory(soak: Soak, warmup: float, kept_kib: float) -> tuple[list[str], bool]:
    """Flat: RSS after warm-up grows by no more than the bounded stores explain, plus slack."""
    if not soak.rss:
        return ["RSS: not sampled"], False
    warm_at, warm = next(((t, kib) for t, kib in soak.rss if t >= warmup), soak.rss[-1])
    end_at, end = soak.rss[-1]
    start, peak = soak.rss[0][1], max(k for _, k in soak.rss)
    kept = kept_answers(soak, end_at) - kept_answers(soak, warm_at)
    allowance = SLACK_KIB + kept * kept_kib
    growth = end - warm
    step = max(1, len(soak.rss) // 10)
    timeline = ", ".join(f"{t:.0f}s {kib / 1024:.0f}" for t, kib in soak.rss[::step])
    lines = [
        f"RSS (MiB): start {start / 1024:.1f}, after warm-up ({warm_at:.0f} s) "
        f"{warm / 1024:.1f}, end {end / 1024:.1f}, peak {peak / 1024:.1f}",
        f"RSS growth after warm-up: {growth / 1024:+.1f} MiB; allowed {allowance / 1024:.1f} "
        f"MiB = {SLACK_KIB // 1024} MiB + {kept} answers newly kept for Idempotency-Key "
        f"repeats x {kept_kib:.2f} KiB (measured)",
        f"RSS timeline (MiB): {timeline}",
    ]
    return lines, growth <= allowance


def report(soak: Soak, seconds: float, phase_seconds: float, senders: int,
           kept_kib: float) -> list[str]:
    """Print the counts; return the invariant failures."""
    failures, seen = check(soak)
    results = soak.results
    answered = [r for r in results if r.status is not None]
    times = sorted(r.seconds for r in answered) or [0.0]
    statuses = Counter(r.status for r in answered)
    print(f"soak: {seconds:.0f} s, {senders} senders, {len(SCHEDULE)}-phase schedule of "
          f"{phase_seconds:.1f} s per phase")
    print(f"requests: {len(results)} ({len(results) / seconds:.0f}/s); answered "
          f"{len(answered)}; no answer {len(results) - len(answered)}")
    print("by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
    kinds = Counter(r.kind for r in results)
    print("by kind: " + ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items())))
    for what in BODIES:  # the hostile bodies' answers; checked with the other results
        got = Counter(r.status for r in results if r.kind == f"hostile:{what}")
        print(f"hostile {what}: {sum(got.values())} (" + ", ".join(
            f"{s}: {n}" for s, n in sorted(got.items(), key=str)) + ")")
    print(f"latency (s): p50 {times[len(times) // 2]:.3f}, p99 "
          f"{times[int(len(times) * 0.99)]:.3f}, max {times[-1]:.3f}")
    for name in ("exactly-once checked", "at-least-once checked", "failover duplicates",
                 "nothing-sent checked", "202 in fact delivered", "replays"):
        print(f"{name}: {seen[name]}")
    for kind, server in soak.emulators.items():
        print(f"emulator {kind}: {json.dumps(server.state.counters)}")
    print("phases (aliyun/huawei: requests, 200/202/502/503):")
    for index in range(min(len(SCHEDULE), 1 + max((r.phase for r in results), default=0))):
        in_phase = Counter(r.status for r in results if r.phase == index)
        modes = "/".join(SCHEDULE[index % len(SCHEDULE)])
        print(f"  {index:2d} {modes:16s} {sum(in_phase.values()):6d}  " + " ".join(
            f"{in_phase[s]}" for s in (200, 202, 502, 503)))
    lines, flat = memory(soak, warmup=max(10.0, seconds * 0.2), kept_kib=kept_kib)
    print("\n".join(lines))
    if not flat:
        failures.append("memory grew after warm-up more than bounded stores explain")
    if statuses[500]:
        failures.append(f"{statuses[500]} answers were 500")
    last = [r for r in results if r.phase == len(SCHEDULE) - 1 and r.status == 200]
    if seconds >= len(SCHEDULE) * 1.5 and not last:
        failures.append("no send succeeded in the last (ok/ok) phase: no recovery")
    failures += [f"{k}: {n}" for k, n in seen.items() if k.startswith("violation") and n > 5]
    return failures


# -- running it ------------------------------------------------------------------------------

async def start_gateway(workdir: Path, emulators: dict[str, EmulatorServer],
                        port: int, senders: int) -> asyncio.subprocess.Process:
    log = workdir / "gateway.log"
    (workdir / "config.yaml").write_text(soak_config(
        log, {kind: server.url for kind, server in emulators.items()}, senders))
    aliyun, huawei = EMULATOR_CREDENTIALS["aliyun"], EMULATOR_CREDENTIALS["huawei"]
    env = {**os.environ, "SOAK_API_KEY": API_KEY,
           "ALIYUN_ACCESS_KEY_ID": aliyun["access_key_id"],
           "ALIYUN_ACCESS_KEY_SECRET": aliyun["access_key_secret"],
           "HUAWEI_APP_KEY": huawei["app_key"], "HUAWEI_APP_SECRET": huawei["app_secret"],
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with (workdir / "console.log").open("wb") as console:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "--config", str(workdir / "config.yaml"),
            "--host", "127.0.0.1", "--port", str(port), cwd=workdir, env=env,
            stdout=console, stderr=console, preexec_fn=die_with_parent)
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError("the gateway exited at start:\n"
                                   + (workdir / "console.log").read_text()[-2000:])
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return process
            await asyncio.sleep(0.1)
    process.kill()
    raise RuntimeError("the gateway did not become healthy in 20 s")


async def stop_gateway(process: asyncio.subprocess.Process) -> list[str]:
    """SIGTERM: the gateway must exit 0 within its shutdown_timeout (10 s)."""
    process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.wait_for(process.wait(), 12)
    except TimeoutError:
        process.kill()
        await process.wait()
        return ["the gateway did not stop within shutdown_timeout after SIGTERM"]
    print(f"gateway stopped on SIGTERM with exit code {code}")
    return [] if code == 0 else [f"the gateway exited {code} on SIGTERM"]


async def run(seconds: float, senders: int, keyed: float, workdir: Path) -> int:
    kept_kib = KEPT_KIB
    emulators = {kind: EmulatorServer(kind, "127.0.0.1") for kind in ("aliyun", "huawei")}
    for server in emulators.values():
        await server.start()
    process: asyncio.subprocess.Process | None = None
    try:
        port = free_port()
        process = await start_gateway(workdir, emulators, port, senders)
        soak = Soak(f"http://127.0.0.1:{port}", emulators, keyed)
        hostile = Hostile("127.0.0.1", port, {"Authorization": f"Bearer {API_KEY}"},
                          HEADER_TIMEOUT, BODY_TIMEOUT)
        phase_seconds = max(1.5, seconds / len(SCHEDULE))
        started = soak.started = time.monotonic()
        until = started + seconds
        timeout = aiohttp.ClientTimeout(total=15)
        # Idle pooled connections are dropped before the gateway's keep-alive (header_timeout)
        # would close them under a request about to be sent.
        connector = aiohttp.TCPConnector(limit=senders, keepalive_timeout=HEADER_TIMEOUT / 4)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await asyncio.gather(
                chaos(soak, phase_seconds, until), sample_rss(soak, process.pid, started, until),
                hostile_traffic(hostile, workdir / "config.yaml", started, seconds),
                *(sender(soak, session, until) for _ in range(senders)))
        for server in emulators.values():
            await server.apply("ok", 0)
        failures = report(soak, time.monotonic() - started, phase_seconds, senders, kept_kib)
        queued = [r.id for r in soak.results if r.kind == "async" and r.status == 202 and r.id]
        lost, outbox = await drained(soak.url, {"Authorization": f"Bearer {API_KEY}"}, queued,
                                     lambda message_id: accepted(soak, message_id))
        print(f"async: {len(queued)} queued; " + ", ".join(
            f"{k}: {n}" for k, n in sorted(outbox.items())))
        failures += lost[:5] + ([f"... {len(lost) - 5} more async failures"] if len(lost) > 5
                                else [])
        await final_metrics(hostile)
        failures += hostile_report(hostile)
        failures += await stop_gateway(process)
        logged = (workdir / "gateway.log").read_text(errors="replace")
        if "Traceback" in logged:
            failures.append(f"the gateway log has {logged.count('Traceback')} traceback(s)")
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        for server in emulators.values():
            await server.stop()
    print(f"gateway log: {workdir / 'gateway.log'}")
    for failure in failures:
        print(f"FAILED: {failure}")
    print("invariants: " + ("FAILED" if failures else "ok"))
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split(
        "\n", 1)[0])
    parser.add_argument("--seconds", type=float,
                        default=float(os.environ.get("SOAK_SECONDS", "300")),
                        help="how long to keep the load on (SOAK_SECONDS, default 300)")
    parser.add_argument("--senders", type=int, default=32, help="concurrent callers (32)")
    parser.add_argument("--keyed", type=float, default=0.25,
                        help="share of sends with an Idempotency-Key (0.25)")
    parser.add_argument("--workdir", help="where the config and logs go (a temp dir)")
    args = parser.parse_args(argv)
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        return asyncio.run(run(args.seconds, args.senders, args.keyed, Path(args.workdir)))
    with tempfile.TemporaryDirectory(prefix="sms-soak-") as workdir:
        return asyncio.run(run(args.seconds, args.senders, args.keyed, Path(workdir)))


if __name__ == "__main__":
    sys.exit(main())
