"""Two real gateway processes on one fresh PostgreSQL database, plus the provider emulators.

Use it from a test module by importing the fixtures (``from replicas import FIXTURES`` names
them; import each ``*_fixture`` with ``# noqa: F401``) and asking for ``replicas`` (or
``replica_db`` plus ``two_replicas(...)`` for a custom set-up, e.g. a store behind a
CuttableProxy).
The database is created once per test run and dropped at the end (as tests/store/conftest.py
does); each test starts from an empty schema. Without a server the tests skip saying why; under
CI=true a missing server fails them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gatewayproc import Gateway, running
from sqlalchemy.engine import make_url
from store.conftest import PgServer, admin, own_database, require

from bench.configs import gateway_config, provider, render
from gateway.emulators import EmulatorServer, start_emulators

FIXTURES = ("replica_server_fixture", "replica_db_fixture", "replicas_fixture")
SEND = {"to": ["+8613800138000"], "template": "verify_code", "params": {"code": "1234"}}


@pytest.fixture(scope="session", name="replica_server")
def replica_server_fixture() -> Iterator[PgServer]:
    """A database of its own for this run's replica tests, dropped afterwards."""
    yield from own_database("smsgw_replicas")


@pytest.fixture(name="replica_db")
async def replica_db_fixture(replica_server: PgServer) -> str:
    """The run's replica database, emptied (the gateways migrate it at start)."""
    url = require(replica_server)
    await admin(url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
    return url


async def eventually(check: Callable[[], Coroutine[Any, Any, bool]], within: float,
                     every: float = 0.1) -> float:
    """Seconds until ``check()`` holds, asked every ``every`` s; AssertionError if it does not
    within ``within``."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within}s")
        await asyncio.sleep(every)
    return time.monotonic() - started


def via_port(url: str, port: int) -> str:
    """``url`` pointed at 127.0.0.1:``port`` (a CuttableProxy in front of the server)."""
    return make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def replica_config(store_url: str, emulators: Mapping[str, EmulatorServer],
                   sections: Mapping[str, Any] | None = None, **server: Any) -> str:
    """A config for one replica: both emulated providers (aliyun first), the store at
    ``store_url``, console logging only. ``sections``: ``storage`` keys added to the store's,
    any other top-level section (``limits``, ``receipts``) appended."""
    extra = dict(sections or {})
    storage = {"url": store_url, **extra.pop("storage", {})}
    return gateway_config(
        server={"api_keys": [], "shutdown_timeout": "3s", **server},
        logging={"level": "INFO", "file": None},
        defaults={"region": "CN", "timeout": "5s", "deadline": "15s"},
        templates=("verify_code", "notice"),
        storage=storage,
        providers=[
            provider("aliyun", priority=1, endpoint=emulators["aliyun"].url, inline=True,
                     templates=("verify_code", "notice")),
            provider("huawei", priority=2, endpoint=emulators["huawei"].url, inline=True,
                     templates=("verify_code", "notice")),
        ]) + (render(extra) if extra else "")


@dataclass
class Replicas:
    """The running replicas, the emulators behind them, and their console logs."""

    gateways: list[Gateway]
    emulators: dict[str, EmulatorServer]
    consoles: list[Path]
    session: aiohttp.ClientSession = field(repr=False)

    @property
    def a(self) -> Gateway:
        return self.gateways[0]

    @property
    def b(self) -> Gateway:
        return self.gateways[1]

    def provider_requests(self) -> int:
        """Requests the emulated providers have received, all kinds together."""
        return sum(s.state.counters["requests"] for s in self.emulators.values())

    async def call(self, gateway: Gateway, method: str, path: str,
                   body: Any = None, headers: Mapping[str, str] | None = None,
                   ) -> tuple[int, Any]:
        """(status, JSON body or None) of one request to ``gateway``."""
        async with self.session.request(method, gateway.url + path, json=body,
                                        headers=dict(headers or {})) as response:
            try:
                payload = await response.json(content_type=None)
            except ValueError:
                payload = None
            return response.status, payload

    async def send(self, gateway: Gateway, key: str | None = None,
                   body: Mapping[str, Any] = SEND) -> tuple[int, Any]:
        """POST /sms to ``gateway`` (with an Idempotency-Key when given)."""
        headers = {"Idempotency-Key": key} if key else {}
        return await self.call(gateway, "POST", "/sms", dict(body), headers)

    def console(self, index: int) -> str:
        return self.consoles[index].read_text(errors="replace")


@contextlib.asynccontextmanager
async def two_replicas(tmp_path: Path, store_urls: Sequence[str], *args: str,
                       sections: Sequence[Mapping[str, Any]] = (),
                       **server: Any) -> AsyncIterator[Replicas]:
    """One gateway process per URL in ``store_urls`` (the same database, possibly through
    different proxies), all on the same emulators; stopped (SIGTERM) afterwards.
    ``sections[i]``: more config for replica ``i`` (see :func:`replica_config`)."""
    emulators = await start_emulators(kinds=("aliyun", "huawei"))
    try:
        async with contextlib.AsyncExitStack() as stack:
            gateways, consoles = [], []
            for index, url in enumerate(store_urls):
                config = tmp_path / f"replica{index}.yaml"
                more = sections[index] if index < len(sections) else None
                config.write_text(replica_config(url, emulators, more, **server))
                console = tmp_path / f"replica{index}.log"
                consoles.append(console)
                gateways.append(await stack.enter_async_context(
                    running(config, *args, console=console)))
            session = await stack.enter_async_context(aiohttp.ClientSession())
            yield Replicas(gateways, emulators, consoles, session)
    finally:
        for emulator in emulators.values():
            await emulator.stop()


@pytest.fixture(name="replicas")
async def replicas_fixture(tmp_path: Path, replica_db: str) -> AsyncIterator[Replicas]:
    """Two replicas (A and B) on one fresh PostgreSQL database, and the emulators."""
    async with two_replicas(tmp_path, [replica_db, replica_db]) as started:
        yield started
