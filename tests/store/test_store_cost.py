"""What one send costs the store: the statements it runs, counted on SQLite's own trace and
on PostgreSQL's wire."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from tcpproxy import CuttableProxy, PgWireCounter

from gateway.store import AttemptEnd, NewMessage, Store
from gateway.store.limits import LimitCheck, LimitWindow

from .conftest import Opener, PgServer, admin, require

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


async def _counted(pg_server: PgServer, open_at: Opener) -> tuple[Store, PgWireCounter,
                                                                   CuttableProxy]:
    """A store on PostgreSQL through a proxy that counts what the store sends the server."""
    url = require(pg_server)
    await admin(url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
    counter = PgWireCounter()
    server = make_url(url)
    proxy = CuttableProxy(server.host or "127.0.0.1", server.port or 5432, tap=counter)
    await proxy.start()
    # ssl=disable: the counter reads the protocol in the clear
    via = server.set(host="127.0.0.1", port=proxy.port).update_query_dict({"ssl": "disable"})
    store = await open_at(via.render_as_string(hide_password=False))
    return store, counter, proxy


async def _send(store: Store, message_id: str, numbers: list[str], **finish: Any) -> None:
    await store.records.create(NewMessage(message_id, "app", "verify_code", numbers,
                                          {"c": "1"}), "aliyun")
    assert await store.records.finish(message_id, "sent", provider="aliyun",
                                      provider_message_id="biz-" + message_id,
                                      last=AttemptEnd(1, "sent", None, "biz-" + message_id),
                                      **finish)


async def test_on_postgresql_a_send_s_record_is_one_statement_before_the_call_one_after(
        pg_server: PgServer, open_at: Opener) -> None:
    # Each statement is a round trip to the server, and the writer runs a batch's statements
    # one after another: on PostgreSQL a send's writes are one statement each (SQLite: 3 + 2).
    store, counter, proxy = await _counted(pg_server, open_at)
    try:
        await _send(store, "warm", [A], recipient_ids={A: "biz-warm"})  # statements prepared
        counter.counts.clear()
        await _send(store, "m1", [A], recipient_ids={A: "biz-m1"})
        assert counter.counts["E"] == 2  # create; finish
        assert counter.round_trips == 2 + 2 * 2  # and each write's BEGIN and COMMIT
        counter.counts.clear()
        numbers = [A, "+8613800138001", "+8613800138002"]
        await _send(store, "m2", numbers, refused={numbers[2]: "E200028"},
                    recipient_ids={A: "r-0", numbers[1]: "r-1"})
        assert counter.counts["E"] == 2  # however many numbers, refused or with their ids
        record = await store.records.get("m2")
    finally:
        await proxy.stop()
    assert record is not None and record.status == "sent" and record.params is None
    assert [(r.number, r.provider_message_id, r.status, r.code)
            for r in sorted(record.recipients, key=lambda r: r.number)] == [
        (A, "r-0", None, None), (numbers[1], "r-1", None, None),
        (numbers[2], None, "refused", "E200028")]
    assert [(a.seq, a.outcome, a.provider_message_id) for a in record.attempts] == [
        (1, "sent", "biz-m2")]


async def test_on_postgresql_sends_written_together_cost_one_round_trip_a_statement(
        pg_server: PgServer, open_at: Opener) -> None:
    # Concurrent sends' writes share the writer's batch; on PostgreSQL the batch's alike
    # statements run as one pipelined executemany: the round trips do not grow with the sends.
    store, counter, proxy = await _counted(pg_server, open_at)
    numbers = [f"+86138001380{i:02d}" for i in range(20)]
    try:
        await _send(store, "warm", [A])  # statements prepared
        counter.counts.clear()
        await asyncio.gather(*(store.records.create(
            NewMessage(f"c{i}", "app", "verify_code", [n], {"c": "1"}), "aliyun")
            for i, n in enumerate(numbers)))
        created = counter.round_trips
        counter.counts.clear()
        assert all(await asyncio.gather(*(store.records.finish(
            f"c{i}", "sent", provider="aliyun", last=AttemptEnd(1, "sent", None, f"p{i}"),
            recipient_ids={n: f"p{i}"}) for i, n in enumerate(numbers))))
        finished = counter.round_trips
    finally:
        await proxy.stop()
    # BEGIN, one pipelined statement, COMMIT; a first write may go alone in a batch of its own
    assert created <= 2 * 3, counter.counts
    assert finished <= 2 * 3, counter.counts


async def test_on_postgresql_the_limits_lock_is_taken_once_a_batch(
        pg_server: PgServer, open_at: Opener) -> None:
    # Each check takes the limits' advisory lock: once per transaction is enough (a batch of
    # the group commit holds it until it commits). It was one round trip more per check.
    store, counter, proxy = await _counted(pg_server, open_at)
    otp = (LimitWindow("1/1m", 1, 60.0), LimitWindow("5/1h", 5, 3600.0))
    try:
        assert (await store.limits.admit([LimitCheck("warm", 1, otp)], "w")).admitted
        counter.counts.clear()
        assert (await store.limits.admit([LimitCheck("n|0", 1, otp)], "m0")).admitted
        assert counter.counts["E"] == 3  # the lock, the count, the hit
        counter.counts.clear()
        verdicts = await asyncio.gather(*(store.limits.admit([LimitCheck(f"n|{i}", 1, otp)],
                                                             f"m{i}") for i in range(1, 11)))
        assert all(v.admitted for v in verdicts)
        assert counter.counts["E"] <= 10 * 2 + 2, counter.counts  # a lock per batch (1 or 2)
        refused = await store.limits.admit([LimitCheck("n|0", 1, otp)], "again")
    finally:
        await proxy.stop()
    assert [e.rule for e in refused.exceeded] == ["1/1m"]
