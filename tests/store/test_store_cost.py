"""What one send costs the store: the statements it runs, counted on SQLite's own trace."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from gateway.store import AttemptEnd, NewMessage, Store

from .conftest import Opener

A = "+8613800138000"


async def _traced(store: Store) -> list[str]:
    """Every statement the write connection runs from now on (SQLite's trace callback)."""
    seen: list[str] = []

    def hook(conn: Connection) -> None:
        raw: Any = conn.connection.dbapi_connection
        raw.set_trace_callback(lambda sql: seen.append(sql.split()[0].upper()))

    await store.database.write(hook)
    seen.clear()
    return seen


async def test_a_send_taken_first_time_is_one_insert_transaction_then_one_update_one(
        tmp_path: Path, open_at: Opener) -> None:
    store = await open_at(f"sqlite:///{tmp_path / 'cost.db'}")
    seen = await _traced(store)
    seq = await store.records.create(NewMessage("m1", "app", "verify_code", [A], {"c": "1"}),
                                     "aliyun")
    assert seq == 1
    # Before the call: the record, its number and attempt 1, inserted; nothing read back.
    assert seen == ["BEGIN", "INSERT", "INSERT", "INSERT", "COMMIT"]
    seen.clear()
    assert await store.records.finish("m1", "sent", provider="aliyun",
                                      last=AttemptEnd(1, "sent"))
    assert seen == ["BEGIN", "UPDATE", "UPDATE", "COMMIT"]
    record = await store.records.get("m1")
    assert record is not None and record.status == "sent" and record.attempts[0].seq == 1


async def test_a_cancelled_caller_s_write_is_still_committed(tmp_path: Path,
                                                             open_at: Opener) -> None:
    store = await open_at(f"sqlite:///{tmp_path / 'cancel.db'}")
    pending = asyncio.ensure_future(store.records.create(
        NewMessage("m2", "app", "verify_code", [A], {"c": "1"}), "aliyun"))
    await asyncio.sleep(0)  # queued, not yet written
    pending.cancel()
    await store.close()  # finishes what was queued
    again = await open_at(f"sqlite:///{tmp_path / 'cancel.db'}")
    record = await again.records.get("m2")
    assert record is not None and len(record.attempts) == 1
