"""``python -m bench`` (``make bench``): the performance benchmark of issue 4.

Starts the emulators, bare proxies and gateways as child processes on 127.0.0.1, drives the same
load against each, prints a table of ratios to same-run baselines and writes
``bench/results/latest.json`` (``python -m bench.report`` puts it in the README). Every child
is stopped at the end, on error and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench import case_outbox, case_receipts, cases, limits_case, store_cases
from bench.case_replicas import case10
from bench.loadgen import wrk_path
from bench.procs import Children
from bench.report import machine, table, write
from bench.stack import BREAKER_OFF, Stack

ROOT = Path(__file__).resolve().parent.parent
# Every case, in the order a full run measures them.
CASES = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0,
                        help="seconds per measured run (5; the whole run takes ~25x this)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating bare/gateway rounds for case 1 (3)")
    parser.add_argument("--generator", choices=("auto", "wrk", "builtin"), default="auto",
                        help="load generator: wrk when installed (auto), or the built-in one")
    parser.add_argument("--cases", default=",".join(CASES), help="which cases, e.g. 1,3 (all)")
    parser.add_argument("--output", type=Path, help="JSON results (bench/results/latest.json)")
    parser.add_argument("--backlog", type=int, default=0,
                        help="case 7: also measure with this many messages queued (100000)")
    parser.add_argument("--note", default="",
                        help="a sentence about this run, kept in the results and the README")
    args = parser.parse_args(argv)
    if args.generator == "wrk" and not wrk_path():
        parser.error("wrk is not installed (make wrk), use --generator builtin")
    args.cases = {c.strip() for c in args.cases.split(",") if c.strip()}
    if args.cases - set(CASES):
        parser.error(f"--cases takes {', '.join(CASES)}")
    return args


async def run(args: argparse.Namespace, workdir: Path) -> int:
    children = Children(workdir, env={"PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    try:
        return await _measure(args, workdir, children)
    finally:
        children.close()


async def _measure(args: argparse.Namespace, workdir: Path, children: Children) -> int:
    started = time.monotonic()
    use_wrk = args.generator != "builtin" and wrk_path() is not None
    print(f"load generator: {'wrk' if use_wrk else 'built-in (aiohttp)'}; "
          f"{args.duration:g} s per run; machine: {machine()}", flush=True)
    stack = Stack(children)
    await stack.start_emulators()
    want = args.cases
    gw = stack.start_gateway("gateway") if want & set("12367") else None
    bare = stack.start_bare("bare") if want & set("1267") else None
    stored = (stack.start_gateway("gateway-store", storage=store_cases.STORE_ON)
              if "6" in want else None)
    no_breaker = (stack.start_gateway("gateway-no-breaker", aliyun_breaker=BREAKER_OFF)
                  if "3" in want else None)
    hang = stack.start_gateway("gateway-hang", aliyun_timeout="1s") if "4" in want else None
    gw5 = stack.start_gateway("gateway-1000") if "5" in want else None
    bare5 = stack.start_bare("bare-1000") if "5" in want else None
    limited = (stack.start_gateway("gateway-limits", storage=limits_case.STORE,
                                   sections={"limits": limits_case.default_rules()})
               if "9" in want else None)
    unlimited = (stack.start_gateway("gateway-no-limits", storage=limits_case.STORE)
                 if "9" in want else None)
    intake7, drain7 = (case_outbox.start_async_gateway(stack, "gateway-async", 0),
                       case_outbox.start_async_gateway(stack, "gateway-drain", 50)) \
        if "7" in want else (None, None)
    await stack.ready(*filter(None, (gw, bare, no_breaker, hang, gw5, bare5, stored, limited,
                                     unlimited, intake7, drain7)))
    b = cases.Bench(stack, workdir, args.duration, use_wrk, max(1, args.rounds))
    if gw and bare and "1" in want:
        await cases.case1(b, gw, bare)
    if gw and bare and "2" in want:
        await cases.case2(b, gw, bare)
    if gw and no_breaker:
        await cases.case3(b, gw, no_breaker)
    if hang:
        await cases.case4(b, hang)
    if gw5 and bare5:
        await cases.case5(b, gw5, bare5)
    if gw and stored and bare:
        await store_cases.case6(b, gw, stored, bare)
    if "11" in want:
        await store_cases.case11(b)
    if limited and unlimited:
        await limits_case.case9(b, limited, unlimited)
    if "8" in want:
        await case_receipts.case8(b)
    if "10" in want:  # replicas: 1 process vs --workers 2 on PostgreSQL, and vs SQLite
        await case10(b)
    if intake7 and drain7 and bare and gw:
        await case_outbox.case7(b, intake7, drain7, bare, gw, args.backlog)
    elapsed = time.monotonic() - started
    settings = {"duration_s": args.duration, "rounds": args.rounds,
                "generator": "wrk" if use_wrk else "builtin", "cases": sorted(want)}
    settings["other_cpu_pct"] = round(sum(b.others) / len(b.others)) if b.others else 0
    settings["note"] = args.note
    path = write(b.figures, b.runs, settings, elapsed, args.output)
    print()
    print(table(b.figures))
    print(f"\n{len(b.figures)} figures in {elapsed:.0f} s; written to {path}")
    if settings["other_cpu_pct"] > 15:
        print(f"note: other processes used {settings['other_cpu_pct']}% of a core on average "
              "while this ran; the figures are noisier than on an idle machine")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="sms-bench-"))
    keep = False

    async def guarded() -> int:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await run(args, workdir)

    try:
        return asyncio.run(guarded())
    except KeyboardInterrupt:
        print("\ninterrupted; every child process was stopped", file=sys.stderr)
        return 130
    except asyncio.CancelledError:
        print("\nterminated; every child process was stopped", file=sys.stderr)
        return 143
    except RuntimeError as exc:
        keep = True
        print(f"\nbenchmark failed: {exc}\n(logs kept in {workdir})", file=sys.stderr)
        return 1
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
