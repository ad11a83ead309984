"""Fixtures that build the real app against the real emulators, over real HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from bench.configs import gateway_config, provider
from gateway.app import create_app
from gateway.cli import emulated_loader
from gateway.emulators import EmulatorServer, start_emulators
from gateway.keys import gateway_key
from gateway.service import Gateway


# Small timeouts and thresholds keep fault tests fast; everything else as shipped. Endpoints
# are the emulators' (filled in by emulated_loader); credentials are ${VAR}s it resolves.
def build_config(*, server: Mapping[str, Any] | None = None,
                defaults: Mapping[str, Any] | None = None,
                providers: Sequence[Mapping[str, Any]] | None = None,
                storage: Mapping[str, Any] | None = None) -> str:
    """TEST_CONFIG with keys of ``server``/``defaults`` added or replaced, or other providers:
    built, never edited as text (a replace that matches nothing would test nothing)."""
    return gateway_config(
        server={"api_keys": [], "max_recipients": 5, "shutdown_timeout": "2s", **(server or {})},
        logging={"file": None},
        defaults={"region": "CN", "timeout": "500ms", "deadline": "3s",
                  "breaker": {"consecutive_failures": 3, "failure_rate": 0.5,
                              "minimum_calls": 10, "window": "30s", "open_for": "30s",
                              "max_open_for": "300s", "half_open_probes": 1},
                  **(defaults or {})},
        providers=providers or [provider("aliyun", priority=1), provider("huawei", priority=2)],
        storage=storage or {"url": "memory"},
    )

# Small timeouts and thresholds keep fault tests fast; everything else as shipped. Endpoints
# are the emulators' (filled in by emulated_loader); credentials are ${VAR}s it resolves.
TEST_CONFIG = build_config()

NUMBER = "+8613800138000"


class FakeClock:
    """Time a test moves by hand: "open_for has passed" is a jump, never a sleep.

    ``real=True`` also runs on with ``time.monotonic``, for an app whose attempt timeouts and
    deadlines must still pass while the test moves the breakers' time.
    """

    def __init__(self, now: float = 1000.0, *, real: bool = False) -> None:
        self.now = now
        self._real = real

    def __call__(self) -> float:
        return self.now + (time.monotonic() if self._real else 0.0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def emulators() -> AsyncIterator[dict[str, EmulatorServer]]:
    servers = await start_emulators()
    try:
        yield servers
    finally:
        for server in servers.values():
            await server.stop()


@dataclass
class Harness:
    """A running gateway, its emulators and its config file."""

    client: TestClient[Any, Any]
    emulators: dict[str, EmulatorServer]
    config_path: Path

    @property
    def gateway(self) -> Gateway:
        app: web.Application | None = self.client.app
        assert app is not None
        return app[gateway_key]

    async def send(self, template: str = "verify_code", to: Any = NUMBER,
                   params: dict[str, Any] | None = None, **kwargs: Any) -> ClientResponse:
        body = {"to": to, "template": template,
                "params": {"code": "123456"} if params is None else params}
        return await self.client.post("/sms", json=body, **kwargs)

    async def mode(self, kind: str, mode: str, latency_ms: int | None = None) -> None:
        await self.emulators[kind].apply(mode, latency_ms)

    def accepted(self, kind: str, message_id: str) -> int:
        return self.emulators[kind].state.accepted[message_id]

    def state(self, provider: str) -> str:
        member = self.gateway.runtime.member(provider)
        assert member is not None
        return member.breaker.state.value


MakeGateway = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_gateway(
    aiohttp_client: Any, emulators: dict[str, EmulatorServer], tmp_path: Path,
) -> MakeGateway:
    async def make(text: str = TEST_CONFIG, *, watch: bool = False,
                   clock: Callable[[], float] = time.monotonic,
                   wall_clock: Callable[[], float] = time.time) -> Harness:
        path = tmp_path / "config.yaml"
        path.write_text(text)
        loader = emulated_loader(path, emulators)
        app = create_app(loader(), config_path=path, loader=loader, emulators=emulators,
                         watch=watch, clock=clock, wall_clock=wall_clock)
        return Harness(await aiohttp_client(app), emulators, path)

    return make


@pytest.fixture
async def gw(make_gateway: MakeGateway) -> Harness:
    return await make_gateway()
