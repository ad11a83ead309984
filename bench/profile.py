"""Where the gateway's time goes under load: ``python -m bench.profile [--latency-ms 100]``.

Runs the emulators and one gateway, drives case 1's load (0 ms provider latency, 50 connections)
and samples the gateway with py-spy (``pip install py-spy``) while it runs. Prints the functions
with the most samples, by own time and by time including callees, and keeps py-spy's collapsed
stacks in ``bench/results/profile-<latency>ms-<target>.txt`` (for speedscope or flamegraph.pl).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.case_replicas import fresh_database
from bench.cases import CONNS, Bench
from bench.loadgen import wrk_path
from bench.procs import Children
from bench.report import RESULTS
from bench.stack import Stack

ROOT = Path(__file__).resolve().parent.parent


def _frame(frame: str) -> str:
    """``func (path/to/module.py:12)`` -> ``module.py:func``, the grain the summary uses."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{'/'.join(Path(path).parts[-2:])}:{name}"


def summarize(collapsed: str, top: int = 25) -> str:
    """Own and inclusive sample shares per function from py-spy's collapsed (raw) output."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";")[1:]]  # [0] is the thread
        samples += int(count)
        if frames:
            own[frames[-1]] += int(count)
        for name in set(frames):
            total[name] += int(count)
    out = [f"{samples} samples"]
    for title, counter in (("own time", own), ("including callees", total)):
        out.append(f"\n-- top {top} by {title} --")
        out += [f"{100 * n / samples:5.1f}%  {name}" for name, n in counter.most_common(top)]
    return "\n".join(out)


async def profile(spy: str, duration: float, workdir: Path, target: str, top: int,
                  latency_ms: int = 0, storage: str | None = None) -> str:
    if storage == "postgresql":  # a database of this run's own, dropped afterwards
        async with fresh_database() as url:
            return await profile(spy, duration, workdir, target, top, latency_ms, url)
    children = Children(workdir, env={"PYTHONPATH": str(ROOT)})
    try:
        stack = Stack(children)
        await stack.start_emulators()
        options: dict[str, Any] = {} if storage is None else {"storage": {"url": storage}}
        gateway = (stack.start_bare("bare") if target == "bare"
                   else stack.start_gateway("gateway", **options))
        await stack.ready(gateway)
        bench = Bench(stack, workdir, duration, wrk_path() is not None)
        await bench.warm(gateway)
        await stack.emulator("aliyun", "ok", latency_ms)  # 100: case 2's load
        out = RESULTS / f"profile-{latency_ms}ms-{target}.txt"
        out.parent.mkdir(exist_ok=True)
        # --gil: only samples that hold the GIL, i.e. Python running, not threads waiting.
        record = await asyncio.create_subprocess_exec(
            spy, "record", "--pid", str(gateway.pid), "--rate", "250", "--gil",
            "--duration", str(round(duration)), "--format", "raw", "--output", str(out),
            "--nonblocking", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        await bench.load(f"{latency_ms} ms provider, {CONNS} conns, {target} under py-spy",
                         gateway, CONNS)
        _, err = await record.communicate()
        if record.returncode != 0:
            raise SystemExit(f"py-spy failed: {err.decode(errors='replace')}")
        return summarize(out.read_text(encoding="utf-8"), top) + f"\n\ncollapsed stacks: {out}"
    finally:
        children.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--target", choices=("gateway", "bare"), default="gateway")
    parser.add_argument("--top", type=int, default=25, help="functions listed per ranking")
    parser.add_argument("--latency-ms", type=int, default=0,
                        help="the provider's latency: 0 is case 1 (default), 100 case 2")
    parser.add_argument("--storage", help="the gateway's storage.url (the shipped default), or "
                        "'postgresql' for a fresh database on the test server (case 10)")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        parser.error("py-spy is not installed: pip install py-spy")
    workdir = Path(tempfile.mkdtemp(prefix="sms-bench-profile-"))
    try:
        print(asyncio.run(profile(spy, args.duration, workdir, args.target, args.top,
                                    args.latency_ms, args.storage)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
