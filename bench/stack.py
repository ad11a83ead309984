"""What the benchmark runs against: emulators, bare proxies and gateways, each its own process."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.configs import gateway_config, provider, render
from bench.procs import Child, Children, free_port, memory_kb, wait_http, wait_line

_REQUESTS = re.compile(r'^sms_requests_total\{status="(\d+)"\} (\S+)$', re.MULTILINE)
BACKUP = "huawei"  # priority 2 in every gateway here: an attempt there is a failover
BREAKER_OFF = {"consecutive_failures": 1_000_000_000, "minimum_calls": 1_000_000_000}


def bench_config(urls: dict[str, str], *, aliyun_timeout: str | None = None,
                 aliyun_breaker: dict[str, int] | None = None,
                 storage: dict[str, Any] | None = None,
                 sections: dict[str, Any] | None = None) -> str:
    """A config.yaml for the emulators: shipped defaults, no log file, WARNING level;
    ``sections`` added at the top level (case 9: ``limits``)."""
    extra: dict[str, Any] = {"timeout": aliyun_timeout} if aliyun_timeout else {}
    if aliyun_breaker:
        extra["breaker"] = aliyun_breaker
    return gateway_config(
        server={"api_keys": [], "max_recipients": 100, "shutdown_timeout": "2s"},
        logging={"level": "WARNING", "file": None},
        defaults={"region": "CN", "timeout": "5s", "deadline": "15s"},
        templates=("verify_code",),
        providers=[
            provider("aliyun", priority=1, endpoint=urls["aliyun"], inline=True,
                     templates=("verify_code",), **extra),
            provider("huawei", priority=2, endpoint=urls["huawei"], inline=True,
                     templates=("verify_code",)),
        ], storage=storage) + (render(sections) if sections else "")


@dataclass(frozen=True)
class Observation:
    """A gateway's own counts at one moment: answers by status, attempts by provider."""

    answers: dict[str, int]
    providers: dict[str, dict[str, Any]]

    def since(self, before: Observation) -> dict[str, Any]:
        """What happened between ``before`` and this one (the provider states are this one's)."""
        answers = {k: v - before.answers.get(k, 0) for k, v in self.answers.items()}
        providers: dict[str, dict[str, Any]] = {}
        for name, now in self.providers.items():
            then = before.providers.get(name, {})
            providers[name] = {k: v - then.get(k, 0) if isinstance(v, int) else v
                               for k, v in now.items()}
        backup = providers.get(BACKUP, {})
        return {"answers": {k: v for k, v in answers.items() if v},
                "unknown_202": answers.get("202", 0),
                "failovers": sum(backup.get(k, 0) for k in
                                 ("sent", "failed", "rejected", "unknown")),
                "providers": providers}


def _gateway_argv() -> list[str]:
    script = Path(sys.executable).parent / "sms-gateway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


class Stack:
    """Starts every process the run needs and talks to the emulators' control API."""

    def __init__(self, children: Children) -> None:
        self.children = children
        self.urls: dict[str, str] = {}
        self.gateways: list[Child] = []

    async def start_emulators(self) -> None:
        child = self.children.start("emulators", [sys.executable, "-m", "bench.emulate"])
        self.urls = await wait_line(child, "BENCH_EMULATORS ")

    def start_bare(self, name: str) -> Child:
        port = free_port()
        child = self.children.start(name, [sys.executable, "-m", "bench.bare_proxy",
                                           "--port", str(port), "--aliyun", self.urls["aliyun"]])
        child.url = f"http://127.0.0.1:{port}"
        return child

    def start_gateway(self, name: str, folder: Path | None = None, **options: Any) -> Child:
        return self.start_config(name, bench_config(self.urls, **options), folder)

    def start_config(self, name: str, text: str, folder: Path | None = None) -> Child:
        """A gateway named ``name`` running the config ``text``, in ``folder`` (else its own)."""
        if folder is None:
            folder = self.children.workdir / name  # its own: the config watcher sees only it
            folder.mkdir()
        config = folder / "config.yaml"
        config.write_text(text, encoding="utf-8")
        port = free_port()
        child = self.children.start(name, [*_gateway_argv(), "--config", str(config),
                                           "--port", str(port), "--log-level", "WARNING"])
        child.url = f"http://127.0.0.1:{port}"
        self.gateways.append(child)
        return child

    def stop(self, child: Child) -> None:
        """Stop one gateway (SIGTERM, as an operator would) and wait for it."""
        child.proc.terminate()
        child.proc.wait(30)
        if child in self.gateways:
            self.gateways.remove(child)

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

    async def fresh(self) -> None:
        """Before each case: emulators healthy with counters at zero, every breaker closed.

        Nothing a case leaves behind (an open breaker, sends still in flight when its load
        stopped) may decide what the next case measures.
        """
        await self.healthy()
        async with aiohttp.ClientSession() as session:
            for kind in ("aliyun", "huawei"):
                async with session.post(f"{self.urls['control']}/_emulator/{kind}/reset",
                                        json={}) as r:
                    r.raise_for_status()
        for gateway in self.gateways:
            for name in ("aliyun", "huawei"):
                await self.admin(gateway, name, "reset")

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
    async def answer_counts(gateway: Child) -> dict[str, int]:
        """Answers by HTTP status so far, from the gateway's ``sms_requests_total``."""
        async with aiohttp.ClientSession() as session, session.get(
                f"{gateway.url}/metrics") as resp:
            text = await resp.text()
        return {m[1]: round(float(m[2])) for m in _REQUESTS.finditer(text)}

    async def observe(self, target: Child) -> Observation | None:
        """What a gateway has counted so far (None for a bare proxy, which counts nothing)."""
        if target not in self.gateways:
            return None
        return Observation(await self.answer_counts(target), await self.provider_counts(target))

    @staticmethod
    def memory_mb(child: Child) -> dict[str, float]:
        return {k: round(v / 1024, 1) for k, v in memory_kb(child.pid).items()}


def wrk_available() -> bool:
    return shutil.which("wrk") is not None
