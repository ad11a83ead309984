"""Closed-loop load: ``wrk`` with a Lua script when installed, else a built-in aiohttp generator.

Both keep ``connections`` requests in flight for ``duration`` seconds (each connection sends its
next request when the previous answer arrives) and report the same :class:`LoadResult`.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

# Every send goes to a different (valid) mainland mobile number, as real traffic does: nothing
# on the way (phone-number parsing above all) may look faster than it is by seeing one number.
BODY = '{"to": ["+86138%08d"], "template": "verify_code", "params": {"code": "%06d"}}'
HEADERS = {"Content-Type": "application/json"}
WRK_PREFIX = "WRK_JSON "
_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

function request()
  local body = string.format('%(body)s', math.random(0, 99999999), math.random(0, 999999))
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(prefix)s{"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "status": %%d, "timeout": %%d, "p50_us": %%d, "p90_us": %%d, ' ..
    '"p99_us": %%d, "max_us": %%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass
class LoadResult:
    """One load run: counts, errors and latency in ms.

    ``errors`` is what the load generator sees (socket errors and non-2xx answers); a gateway
    also answers 202 ``unknown`` and fails over behind a 200, which only it can count:
    ``unknown`` and ``failovers`` come from its /metrics and /status (0 for a bare proxy).
    """

    generator: str
    connections: int
    duration: float
    requests: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    samples: list[Sample] = field(default_factory=list, repr=False)
    cpu_us_per_request: float | None = None  # of the process under load, from /proc
    unknown: int = 0  # 202 answers: maybe sent
    failovers: int = 0  # sends that reached the backup provider

    @property
    def faults(self) -> int:
        """Every send that did not go cleanly through the first provider."""
        return self.errors + self.unknown + self.failovers

    @property
    def rps(self) -> float:
        return self.requests / self.duration if self.duration else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["samples"]
        data["rps"] = round(self.rps, 1)
        return data


@dataclass(slots=True)
class Sample:
    """One request seen by the built-in generator (times from ``time.perf_counter``)."""

    start: float
    end: float
    status: int
    tag: Any = None

    @property
    def ms(self) -> float:
        return (self.end - self.start) * 1000


def body() -> bytes:
    """One send request's JSON body, to a random mobile number."""
    return (BODY % (random.randrange(10**8), random.randrange(10**6))).encode()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank, of unsorted values; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def wrk_path() -> str | None:
    return shutil.which("wrk")


def run_wrk(url: str, connections: int, duration: float, workdir: Path) -> LoadResult:
    """wrk -c N -d D with a POST JSON script; its done() hook prints the figures as JSON."""
    script = workdir / "post.lua"
    if not script.exists():
        script.write_text(_LUA % {"body": BODY, "prefix": WRK_PREFIX})
    threads = 1 if connections <= 100 else 2
    argv = [wrk_path() or "wrk", "-t", str(threads), "-c", str(connections),
            "-d", f"{max(1, round(duration))}s", "--timeout", "30s", "-s", str(script), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60,
                          check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(WRK_PREFIX)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line[len(WRK_PREFIX):])
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return LoadResult("wrk", connections, raw["duration_us"] / 1e6, raw["requests"], errors,
                      raw["p50_us"] / 1000, raw["p90_us"] / 1000, raw["p99_us"] / 1000,
                      raw["max_us"] / 1000)


async def run_builtin(url: str, connections: int, duration: float,
                      tag: Callable[[int, bytes], Any] | None = None) -> LoadResult:
    """The fallback generator: ``connections`` workers, each one request at a time."""
    samples: list[Sample] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        stop_at = started + duration

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                data, begin = body(), time.perf_counter()
                try:
                    async with session.post(url, data=data, headers=HEADERS) as resp:
                        answer = await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, OSError, TimeoutError):
                    errors += 1
                    await asyncio.sleep(0.01)  # a refused connection must not spin
                    continue
                errors += not 200 <= status < 300
                samples.append(Sample(begin, time.perf_counter(), status,
                                      tag(status, answer) if tag else None))

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    ms = [s.ms for s in samples]
    return LoadResult("builtin", connections, elapsed, len(samples), errors,
                      percentile(ms, 50), percentile(ms, 90), percentile(ms, 99),
                      max(ms, default=0.0), samples)


async def run_load(url: str, connections: int, duration: float, workdir: Path,
                   use_wrk: bool) -> LoadResult:
    """wrk when asked for and installed, else the built-in generator."""
    if use_wrk and wrk_path():
        return await asyncio.to_thread(run_wrk, url, connections, duration, workdir)
    return await run_builtin(url, connections, duration)
