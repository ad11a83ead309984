"""The store's share of scale-out: heartbeats, notify/listen, provider state, fail-fast health."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.store import Store, StoreUnavailableError
from gateway.store.health import TRIAL_EVERY, StoreHealth, is_outage
from gateway.store.provider_state import CHANNEL

from .conftest import FakeClock, Opener, PgServer, admin, require


async def test_heartbeats_list_the_replicas_seen_recently(store: Store, clock: FakeClock) -> None:
    await store.replicas.beat("host:1:aa", clock.now, "1.0", {"aliyun": {"state": "closed"}})
    clock.advance(5)
    await store.replicas.beat("host:2:bb", clock.now, "1.0", {"aliyun": {"state": "open"}})
    await store.replicas.beat("host:2:bb", clock.now, "1.0", {"aliyun": {"state": "closed"}})
    alive = await store.replicas.seen_since(clock.now - 7)
    assert [r.id for r in alive] == ["host:1:aa", "host:2:bb"]
    assert alive[1].breakers == {"aliyun": {"state": "closed"}}  # the latest beat's view
    assert [r.id for r in await store.replicas.seen_since(clock.now - 2)] == ["host:2:bb"]
    await store.replicas.forget("host:2:bb")
    assert await store.replicas.prune(clock.now) == 1  # host:1 was last seen 5 s ago
    assert await store.replicas.seen_since(0) == []


async def test_a_notification_reaches_the_listeners(store_url: str, open_at: Opener) -> None:
    """On PostgreSQL from one store (replica) to another; on SQLite within the process."""
    one = await open_at(store_url)
    other = await open_at(store_url) if store_url.startswith("postgresql") else one
    heard: asyncio.Queue[str] = asyncio.Queue()
    other.listen("wake_up", heard.put_nowait)
    await asyncio.wait_for(other.signals.connected.wait(), 10)
    await one.notify("wake_up", "outbox")
    assert await asyncio.wait_for(heard.get(), 5) == "outbox"
    with pytest.raises(ValueError, match="lowercase"):
        await one.notify("Robert'); DROP TABLE messages;--")


async def test_provider_state_changes_notify_other_replicas(pg_server: PgServer,
                                                            open_at: Opener) -> None:
    """PostgreSQL only: on SQLite there is no server to relay them (replicas poll)."""
    store_url = require(pg_server)
    await admin(store_url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
    one, other = await open_at(store_url), await open_at(store_url)
    heard: asyncio.Queue[str] = asyncio.Queue()
    other.listen(CHANNEL, heard.put_nowait)
    await asyncio.wait_for(other.signals.connected.wait(), 10)
    await one.providers.set_forced_open("aliyun", True, "by hand")
    assert await asyncio.wait_for(heard.get(), 5) == "aliyun"
    assert (await other.providers.all())["aliyun"].forced_open


async def test_health_fails_fast_while_down_and_logs_each_change_once(
        caplog: pytest.LogCaptureFixture) -> None:
    answers: list[Exception | None] = [OSError("refused"), OSError("refused"), None]

    async def probe() -> None:
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    now = [100.0]
    health = StoreHealth("postgresql://u:***@db/x", probe, rand=lambda: 0.0,
                         clock=lambda: now[0])
    back = asyncio.Event()
    health.listeners.append(lambda up: back.set() if up else None)
    caplog.set_level(logging.INFO, "gateway.store")
    health.check()
    for _ in range(3):
        health.failed("connection refused")
    health.check()  # one operation tries for real (a half-open probe)...
    for _ in range(3):  # ...the others fail at once
        with pytest.raises(StoreUnavailableError, match="unreachable: connection refused"):
            health.check()
    now[0] += 2 * TRIAL_EVERY
    health.check()  # the next try, a moment later
    with pytest.raises(StoreUnavailableError):
        health.check()
    await asyncio.wait_for(back.wait(), 5)  # the probe task brings it back without traffic
    health.check()
    lines = [r.getMessage() for r in caplog.records]
    assert sum("store down" in line for line in lines) == 1
    assert sum("store back" in line for line in lines) == 1
    await health.close()


def test_what_counts_as_an_outage() -> None:
    assert is_outage(ConnectionRefusedError(111, "refused"))
    assert is_outage(TimeoutError())
    assert not is_outage(ValueError("a bug"))
