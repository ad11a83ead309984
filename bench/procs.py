"""Child processes for the benchmark: started in their own session, always killed at the end.

Every child gets ``PR_SET_PDEATHSIG`` (Linux) so even a ``kill -9`` of the runner takes the
children with it; a normal exit, an error or Ctrl-C goes through :meth:`Children.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # runs in the child between fork and exec (Linux)
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the child binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (all its threads)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a supervisor's workers), from /proc."""
    found = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found.extend(process_tree(int(child)))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU used so far by ``pid`` and its live descendants (``--workers``: all the workers)."""
    total = 0.0
    for one in process_tree(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(one)
    return total


def machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy (all cores, every process), from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(
            int, stat.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident set) of a process, in kB, from /proc."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


class Child:
    """One started process, its log file, and how to reach it."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log
        self.url = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with {code}:\n{self.tail()}")


class Children:
    """Starts children and, on close, stops every one of them (TERM, then KILL)."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.env = env or {}
        self._all: list[Child] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as sink:  # the child keeps its own descriptor; never a pipe to fill
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                cwd=self.workdir, env={**os.environ, **self.env, **(env or {})},
                start_new_session=True,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )
        child = Child(name, proc, log)
        self._all.append(child)
        return child

    def cpu_seconds(self) -> float:
        """CPU used so far by this process, its finished helpers (wrk) and its live children
        (with theirs: a supervisor's workers are ours too)."""
        own = sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
                  for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        return own + sum(tree_cpu_seconds(child.pid) for child in self._all)

    def close(self) -> None:
        """Stop every child; safe to call twice and from a finally block."""
        for child in self._all:
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for child in self._all:
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait()
        self._all.clear()


async def wait_http(child: Child, url: str, timeout: float = 30.0) -> None:
    """Poll ``url`` until it answers 200; fail early when the child dies."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            child.check_alive()
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} did not answer {url}:\n{child.tail()}")
            await asyncio.sleep(0.1)


async def wait_line(child: Child, prefix: str, timeout: float = 30.0) -> dict[str, Any]:
    """The JSON after ``prefix`` on a line of the child's log (how helpers announce ports)."""
    deadline = time.monotonic() + timeout
    while True:
        child.check_alive()
        for line in child.tail(200).splitlines():
            if line.startswith(prefix):
                found: dict[str, Any] = json.loads(line[len(prefix):])
                return found
        if time.monotonic() > deadline:
            raise RuntimeError(f"{child.name} did not start:\n{child.tail()}")
        await asyncio.sleep(0.05)
