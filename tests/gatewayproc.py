"""The real ``sms-gateway`` as a subprocess, for tests of startup, serving and logging."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent

# A sandbox provider: nothing leaves the process, no emulator needed.
SANDBOX = """\
server:
  api_keys: []
{server}
logging:
{logging}
templates:
  verify_code: {{params: [code]}}
providers:
  - {{name: box, type: sandbox}}
"""
SEND = {"to": ["+8613800138000"], "template": "verify_code", "params": {"code": "1234"}}


def sandbox_config(server: str = "", logging: str = "  file: null") -> str:
    """A runnable config; ``server``/``logging`` are indented lines under those keys."""
    return SANDBOX.format(server=server, logging=logging)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_cli(*args: str, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m gateway ARGS`` to completion (``--check`` and failing starts)."""
    return subprocess.run(  # noqa: S603 - our own module, no shell
        [sys.executable, "-m", "gateway", *args], cwd=cwd or ROOT, capture_output=True,
        text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@dataclass
class Gateway:
    """A running gateway process and its URL."""

    process: asyncio.subprocess.Process
    url: str
    port: int

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)


async def until(condition: Callable[[], bool], within: float = 20.0) -> None:
    """Poll ``condition`` (a cheap check of a file or counter) until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def ready(url: str, within: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return
            if loop.time() > deadline:
                raise AssertionError("the gateway did not start")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running(config: Path, *args: str, console: Path, cwd: Path = ROOT,
                  open_files: int | None = None) -> AsyncIterator[Gateway]:
    """Start ``python -m gateway --config CONFIG ARGS`` and stop it (SIGTERM) afterwards;
    its console output goes to the file ``console`` (a pipe nobody reads could fill up).
    ``open_files`` lowers the process's ``ulimit -n``."""
    port = free_port()

    def limit() -> None:
        assert open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    with console.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "--config", str(config), "--port", str(port),
            *args, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=out, stderr=out, preexec_fn=limit if open_files else None)
    url = f"http://127.0.0.1:{port}"
    try:
        waiting = asyncio.ensure_future(ready(url))
        exited = asyncio.ensure_future(process.wait())
        await asyncio.wait({waiting, exited}, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            waiting.cancel()
            raise AssertionError(f"exited: {console.read_text()}")
        exited.cancel()
        await waiting
        yield Gateway(process, url, port)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
