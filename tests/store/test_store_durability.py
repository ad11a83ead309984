"""The store survives restarts, batches its commits and refuses what it cannot use safely."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, event, text
from sqlalchemy.exc import IntegrityError

from gateway.store import (
    KeyConflict,
    ListQuery,
    NewMessage,
    Replay,
    SchemaTooNewError,
    StoreClosedError,
    StoreUnavailableError,
    body_hash,
    open_store,
)
from gateway.store.schema import metadata

from .conftest import START, FakeClock, Opener

A = "+8613800138000"
BODY = body_hash(b"{}")


def message(mid: str) -> NewMessage:
    return NewMessage(mid, "app", "verify_code", [A], {"code": "1"})


async def test_records_keys_and_provider_state_survive_a_restart(store_url: str,
                                                                 open_at: Opener) -> None:
    before = await open_at(store_url)
    await before.records.create(message("m1"))
    seq = await before.records.attempt_started("m1", "aliyun")
    await before.records.attempt_finished("m1", seq, "accepted", provider_message_id="p1")
    await before.records.finish("m1", "sent", provider="aliyun", provider_message_id="p1")
    await before.records.create(message("m2"))  # answered never: still sending at the crash
    await before.idempotency.claim("app", "done", BODY, "m1")
    await before.idempotency.complete("app", "done", 200, {"id": "m1", "status": "sent"})
    await before.idempotency.claim("app", "busy", BODY, "m2")
    await before.providers.set_disabled("huawei", START + 300, "account suspended")
    await before.providers.set_forced_open("aliyun", True, "maintenance")
    await before.close()

    after = await open_at(store_url)
    sent = await after.records.get("m1")
    assert sent is not None and (sent.status, sent.provider_message_id) == ("sent", "p1")
    assert [a.outcome for a in sent.attempts] == ["accepted"]
    page = await after.records.list(ListQuery(to=A))
    assert [item.id for item in page.items] == ["m2", "m1"]  # one created_at: id breaks ties
    assert await after.idempotency.claim("app", "done", BODY) == Replay(
        200, {"id": "m1", "status": "sent"}, "m1")
    assert await after.idempotency.claim("app", "busy", BODY) == KeyConflict("in_flight")
    states = await after.providers.all()
    assert (states["huawei"].disabled_until, states["huawei"].reason) == (
        START + 300, "account suspended")
    assert states["aliyun"].forced_open and states["aliyun"].disabled_until is None
    await after.providers.set_disabled("huawei", None, None)
    await after.providers.clear("aliyun")
    states = await after.providers.all()
    assert list(states) == ["huawei"] and states["huawei"].disabled_until is None


async def test_concurrent_writes_share_commits(store_url: str, open_at: Opener) -> None:
    store = await open_at(store_url)
    commits: list[int] = []
    event.listen(store.write_engine, "commit", lambda conn: commits.append(1))
    writes = 40
    await asyncio.gather(*(store.records.create(message(f"m{i}")) for i in range(writes)))
    page = await store.records.list(ListQuery(limit=writes))
    assert len(page.items) == writes
    # Group commit: queued writes share a transaction; one commit per write would be 40.
    assert 1 <= len(commits) < writes / 4, f"{len(commits)} commits for {writes} writes"


async def test_a_failing_write_does_not_undo_its_batch(store_url: str, open_at: Opener) -> None:
    store = await open_at(store_url)
    results = await asyncio.gather(
        store.records.create(message("one")), store.records.create(message("one")),
        store.records.create(message("two")), return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], IntegrityError)
    assert await store.records.get("one") is not None
    assert await store.records.get("two") is not None


async def test_a_closed_store_refuses_writes(store_url: str, open_at: Opener) -> None:
    store = await open_at(store_url)
    pending = asyncio.ensure_future(store.records.create(message("queued")))
    await asyncio.sleep(0)  # queued before close: close writes it first
    await store.close()
    await pending
    with pytest.raises(StoreClosedError):
        await store.records.create(message("late"))
    with pytest.raises(StoreClosedError):
        await store.records.get("queued")
    reopened = await open_at(store_url)
    assert await reopened.records.get("queued") is not None


async def test_a_newer_schema_is_refused(store_url: str, open_at: Opener) -> None:
    store = await open_at(store_url)
    await store.database.write(
        lambda conn: conn.execute(text("UPDATE alembic_version SET version_num = 'r9999'")))
    await store.close()
    with pytest.raises(SchemaTooNewError, match=r"r9999.*newer than this gateway knows"):
        await open_store(store_url)


async def test_the_schema_matches_the_migrations(store_url: str, open_at: Opener) -> None:
    store = await open_at(store_url)

    def differences(conn: Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    assert await store.database.read(differences) == []


async def test_the_memory_store_works_and_keeps_nothing(open_at: Opener) -> None:
    store = await open_at("memory")
    await store.records.create(message("m1"))
    await store.records.finish("m1", "sent")
    both = await asyncio.gather(store.records.get("m1"), store.records.list(ListQuery()))
    assert both[0] is not None and [item.id for item in both[1].items] == ["m1"]
    await store.close()
    again = await open_at("memory")
    assert await again.records.get("m1") is None


async def test_a_sweep_applies_retention_and_key_expiry(store_url: str, open_at: Opener,
                                                        clock: FakeClock) -> None:
    store = await open_at(store_url, idempotency_ttl=3600)
    await store.records.create(message("old"))
    await store.idempotency.claim("app", "old", BODY)
    clock.advance(86400)
    await store.records.create(message("new"))
    await store.idempotency.claim("app", "new", BODY)
    assert await store.sweep(retention=3600) == (1, 1)
    assert await store.records.get("old") is None and await store.records.get("new") is not None
    assert await store.idempotency.claim("app", "new", BODY) == KeyConflict("in_flight")


async def test_sqlite_runs_in_wal_mode_with_normal_sync(tmp_path: Path, open_at: Opener) -> None:
    store = await open_at(f"sqlite:///{tmp_path}/wal.db")
    def pragmas(conn: Connection) -> list[Any]:
        return [conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout")]

    modes = await store.database.read(pragmas)
    assert modes == ["wal", 1, 5000]  # synchronous 1 is NORMAL


async def test_the_writer_survives_a_batch_that_breaks(store_url: str, open_at: Opener,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    store = await open_at(store_url)
    broken = store.database.backend

    class Boom(RuntimeError):
        pass

    original = broken.write

    async def failing_once(work: Any) -> Any:
        broken.write = original  # type: ignore[method-assign]
        raise Boom("not a database error")

    broken.write = failing_once  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailableError):
        await store.records.create(message("lost"))
    assert "store write failed unexpectedly" in caplog.text
    # The writer task is still there (a dead one would leave this waiting forever).
    await asyncio.wait_for(store.records.create(message("next")), 30)
    assert await store.records.get("next") is not None
