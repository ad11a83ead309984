"""A status-callback receiver on 127.0.0.1 for tests: records what arrives, answers as told."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from conftest import Harness

SECRET = "s3cret-callback-key"


@dataclass(frozen=True)
class Arrival:
    """One POST as the receiver saw it: headers and the raw body."""

    headers: dict[str, str]
    body: bytes
    path: str

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers ``status`` (or hangs until released while ``hang``); every POST is kept."""

    status: int = 200
    hang: bool = False
    got: list[Arrival] = field(default_factory=list)
    arrived: asyncio.Queue[Arrival] = field(default_factory=asyncio.Queue)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}/hook?token=t0k3n"

    async def handle(self, request: web.Request) -> web.Response:
        delivery = Arrival(dict(request.headers), await request.read(), request.path_qs)
        self.got.append(delivery)
        self.arrived.put_nowait(delivery)
        if self.hang:
            await asyncio.wait_for(self.released.wait(), 60)
        return web.Response(status=self.status)

    async def next(self, timeout: float = 5.0) -> Arrival:
        """The next POST to arrive (a failure after ``timeout`` seconds)."""
        return await asyncio.wait_for(self.arrived.get(), timeout)

    async def nothing(self, within: float = 0.3) -> None:
        """No POST arrives within ``within`` seconds."""
        try:
            extra = await asyncio.wait_for(self.arrived.get(), within)
        except TimeoutError:
            return
        raise AssertionError(f"an unexpected callback arrived: {extra.body[:200]!r}")


async def start_receiver(aiohttp_server: Any) -> Receiver:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    receiver.server = await aiohttp_server(app)
    return receiver


def sample(gw: Harness, outcome: str) -> float:
    """``sms_callbacks_total{outcome}``."""
    value = gw.gateway.metrics.registry.get_sample_value(
        "sms_callbacks_total", {"outcome": outcome})
    return value or 0.0


async def until(check: Any, timeout: float = 5.0) -> None:
    """Wait until ``check()`` is true (a state another task reaches), at most ``timeout``."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)
