"""Store fixtures: every store test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``SMS_GATEWAY_TEST_DATABASE_URL`` (default: the local server, trust auth).
Each test run creates its own database with a random name and drops it at the end; each test
starts from an empty schema. Without a server those tests skip, saying why; under CI=true a
missing server fails them instead.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.store import Store, open_store

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
START = 1_800_000_000.0


class FakeClock:
    """Unix time that moves only when a test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class PgServer:
    """The per-run PostgreSQL database, or why there is none."""

    url: str | None
    reason: str = ""


def _async_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(
        hide_password=False)


async def admin(url: str, *statements: str) -> None:
    """Run ``statements`` outside a transaction (CREATE/DROP DATABASE need that)."""
    engine = create_async_engine(_async_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A database of its own for this test run on the test server, dropped afterwards."""
    yield from own_database("smsgw_test")


def own_database(prefix: str) -> Iterator[PgServer]:
    """Create a database named ``prefix`` + a random tail on the test server, yield it (or why
    there is none), drop it afterwards."""
    admin_url = os.environ.get("SMS_GATEWAY_TEST_DATABASE_URL", PG_DEFAULT)
    name = f"{prefix}_{secrets.token_hex(6)}"
    try:
        asyncio.run(asyncio.wait_for(admin(admin_url, f'CREATE DATABASE "{name}"'), 15))
    except Exception as exc:  # any failure means: no server for these tests
        shown = make_url(admin_url).render_as_string(hide_password=True)
        yield PgServer(None, f"no PostgreSQL at {shown} ({type(exc).__name__}: {exc})")
        return
    try:
        yield PgServer(make_url(admin_url).set(database=name).render_as_string(hide_password=False))
    finally:
        asyncio.run(admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path,
                    pg_server: PgServer) -> str:
    """A storage URL to an empty database, on each engine in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    url = require(pg_server)
    await admin(url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
    return url


def require(pg_server: PgServer) -> str:
    """The PostgreSQL URL, or skip (fail under CI=true) saying why there is none."""
    if pg_server.url is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true needs PostgreSQL: {pg_server.reason}")
        pytest.skip(pg_server.reason)
    return pg_server.url


@pytest.fixture
def clock() -> FakeClock:
    """The store's injected clock."""
    return FakeClock()


Opener = Callable[..., Awaitable[Store]]


@pytest.fixture
async def open_at(clock: FakeClock) -> AsyncIterator[Opener]:
    """Open stores (closed at the end of the test); defaults to the test's clock."""
    opened: list[Store] = []

    async def opener(url: str, **options: Any) -> Store:
        options.setdefault("clock", clock)
        store = await open_store(url, **options)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        await store.close()


@pytest.fixture
async def store(store_url: str, open_at: Opener) -> Store:
    """An open store on an empty database."""
    return await open_at(store_url)
