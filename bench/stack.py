"""What the benchmark runs against: emulators, bare proxies and gateways, each its own process."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import Any

import aiohttp

from bench.procs import Child, Children, free_port, memory_kb, wait_http, wait_line
from gateway.emulators import EMULATOR_CREDENTIALS, EMULATOR_OPTIONS

BREAKER_OFF = {"consecutive_failures": 1_000_000_000, "minimum_calls": 1_000_000_000}


def gateway_config(urls: dict[str, str], *, aliyun_timeout: str | None = None,
                   aliyun_breaker: dict[str, int] | None = None) -> str:
    """A config.yaml for the emulators: shipped defaults, no log file, WARNING level."""
    aliyun_creds, huawei_creds = EMULATOR_CREDENTIALS["aliyun"], EMULATOR_CREDENTIALS["huawei"]
    extra = f"    timeout: {aliyun_timeout}\n" if aliyun_timeout else ""
    if aliyun_breaker:
        pairs = ", ".join(f"{k}: {v}" for k, v in aliyun_breaker.items())
        extra += f"    breaker: {{{pairs}}}\n"
    return f"""\
server: {{api_keys: [], max_recipients: 100, shutdown_timeout: 2s}}
logging: {{level: WARNING, file: null}}
defaults:
  region: CN
  timeout: 5s
  deadline: 15s
templates:
  verify_code: {{params: [code], on_unknown: failover}}
providers:
  - name: aliyun
    type: aliyun
    priority: 1
    endpoint: {urls["aliyun"]}
    credentials: {{access_key_id: "{aliyun_creds["access_key_id"]}",
                  access_key_secret: "{aliyun_creds["access_key_secret"]}"}}
    sign_name: "{EMULATOR_OPTIONS["aliyun"]["sign_name"]}"
    templates: {{verify_code: SMS_123456789}}
{extra}  - name: huawei
    type: huawei
    priority: 2
    endpoint: {urls["huawei"]}
    credentials: {{app_key: "{huawei_creds["app_key"]}",
                  app_secret: "{huawei_creds["app_secret"]}"}}
    sender: "{EMULATOR_OPTIONS["huawei"]["sender"]}"
    templates: {{verify_code: 8ff55eac1d0b478ab3c06c3c6a492300}}
"""


def _gateway_argv() -> list[str]:
    script = Path(sys.executable).parent / "sms-gateway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


class Stack:
    """Starts every process the run needs and talks to the emulators' control API."""

    def __init__(self, children: Children) -> None:
        self.children = children
        self.urls: dict[str, str] = {}

    async def start_emulators(self) -> None:
        child = self.children.start("emulators", [sys.executable, "-m", "bench.emulate"])
        self.urls = await wait_line(child, "BENCH_EMULATORS ")

    def start_bare(self, name: str) -> Child:
        port = free_port()
        child = self.children.start(name, [sys.executable, "-m", "bench.bare_proxy",
                                           "--port", str(port), "--aliyun", self.urls["aliyun"]])
        child.url = f"http://127.0.0.1:{port}"
        return child

    def start_gateway(self, name: str, **options: Any) -> Child:
        folder = self.children.workdir / name  # its own folder: the config watcher sees only it
        folder.mkdir()
        config = folder / "config.yaml"
        config.write_text(gateway_config(self.urls, **options), encoding="utf-8")
        port = free_port()
        child = self.children.start(name, [*_gateway_argv(), "--config", str(config),
                                           "--port", str(port), "--log-level", "WARNING"])
        child.url = f"http://127.0.0.1:{port}"
        return child

    async def ready(self, *children: Child) -> None:
        await asyncio.gather(*(wait_http(c, c.url + "/healthz") for c in children))

    async def emulator(self, kind: str, mode: str = "ok", latency_ms: int = 0) -> None:
        """Set an emulator's mode and latency (``down`` closes its port)."""
        async with aiohttp.ClientSession() as session, session.post(
                f"{self.urls['control']}/_emulator/{kind}",
                json={"mode": mode, "latency_ms": latency_ms}) as resp:
            if resp.status != 200:
                raise RuntimeError(f"emulator {kind} {mode}: {resp.status} {await resp.text()}")

    async def healthy(self) -> None:
        await self.emulator("aliyun")
        await self.emulator("huawei")

    @staticmethod
    async def admin(gateway: Child, provider: str, action: str) -> None:
        async with aiohttp.ClientSession() as session, session.post(
                f"{gateway.url}/admin/providers/{provider}/{action}", json={}) as resp:
            resp.raise_for_status()

    @staticmethod
    async def provider_counts(gateway: Child) -> dict[str, Any]:
        """Breaker state and attempt counts per provider, from ``GET /status``."""
        async with aiohttp.ClientSession() as session, session.get(
                f"{gateway.url}/status") as resp:
            doc = await resp.json()
        return {p["name"]: {"state": p["state"], **p["counts"]} for p in doc["providers"]}

    @staticmethod
    def memory_mb(child: Child) -> dict[str, float]:
        return {k: round(v / 1024, 1) for k, v in memory_kb(child.pid).items()}


def wrk_available() -> bool:
    return shutil.which("wrk") is not None
