"""Synchronous sends a crash left half done (kill -9, power loss): settled, never left hanging.

A sync send's record is ``sending`` from just before its first provider call until its final
status. If the process dies in between, nobody will ever finish it: once it is older than any
live send can be (the caller's ``older_than``: the deadline and a margin, so a replica's live
sends are never touched), it is settled here. With an attempt started and not finished the
provider may have sent it: ``unknown`` (SPEC §7), that attempt ``unknown`` too; with no attempt,
nothing was sent: ``failed``. Async messages are the outbox's (SPEC §8) and are left alone.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, and_, case, exists, select, update

from gateway.store.db import Database
from gateway.store.schema import attempts, messages, to_us

BATCH = 200
MAYBE_SENT = "interrupted by a restart: the provider may have sent it"
NOT_SENT = "interrupted by a restart before any provider was called: nothing was sent"


@dataclass(frozen=True, slots=True)
class Settled:
    """One record settled: its new status, and the callback to tell (if any)."""

    id: str
    status: str
    callback_url: str | None


def stale_ids(conn: Connection, cutoff_us: int, limit: int = BATCH) -> list[str]:
    """Sync records still ``sending`` that were created before ``cutoff_us``."""
    return list(conn.scalars(
        select(messages.c.id)
        .where(messages.c.status == "sending", messages.c.created_at < cutoff_us,
               messages.c.mode == "sync")
        .order_by(messages.c.created_at).limit(limit)))


def settle(conn: Connection, ids: Sequence[str], now_us: int, *,
           keep_params: bool) -> list[Settled]:
    """Settle the records ``ids`` that are still sync and ``sending`` (checked again here, in
    the write transaction: a record that finished meanwhile is left as it is)."""
    if not ids:
        return []
    still = list(conn.execute(
        select(messages.c.id, messages.c.callback_url)
        .where(messages.c.id.in_(ids), messages.c.status == "sending",
               messages.c.mode == "sync", messages.c.final_at.is_(None))))
    if not still:
        return []
    chosen = [row.id for row in still]
    conn.execute(
        update(attempts)
        .where(attempts.c.message_id.in_(chosen), attempts.c.finished_at.is_(None),
               attempts.c.outcome.is_(None))
        .values(outcome="unknown", error=MAYBE_SENT))
    tried = exists().where(attempts.c.message_id == messages.c.id)
    last_provider = (select(attempts.c.provider)
                     .where(attempts.c.message_id == messages.c.id)
                     .order_by(attempts.c.seq.desc()).limit(1).scalar_subquery())
    values: dict[str, object] = {
        "status": case((tried, "unknown"), else_="failed"),
        "error": case((tried, MAYBE_SENT), else_=NOT_SENT),
        "provider": last_provider, "final_at": now_us, "updated_at": now_us,
        "lease_until": None, "lease_owner": None, "next_attempt_at": None}
    if not keep_params:
        values["params"] = None
    conn.execute(update(messages)
                 .where(and_(messages.c.id.in_(chosen), messages.c.status == "sending",
                             messages.c.final_at.is_(None)))
                 .values(**values))
    statuses = {row.id: row.status for row in conn.execute(
        select(messages.c.id, messages.c.status).where(messages.c.id.in_(chosen)))}
    return [Settled(row.id, statuses[row.id], row.callback_url) for row in still]


async def settle_interrupted(db: Database, older_than: float, *,
                             keep_params: bool = False) -> list[Settled]:
    """Settle every sync record left ``sending`` for more than ``older_than`` seconds, a batch
    per transaction; what was settled."""
    done: list[Settled] = []
    while True:
        cutoff = db.now_us() - to_us(older_than)
        ids = await db.read(functools.partial(stale_ids, cutoff_us=cutoff))
        if not ids:
            return done
        batch = await db.write(functools.partial(_settle_now, db, ids, keep_params))
        done.extend(batch)
        if len(ids) < BATCH or not batch:
            return done


def _settle_now(db: Database, ids: Sequence[str], keep_params: bool,
                conn: Connection) -> list[Settled]:
    return settle(conn, ids, db.now_us(), keep_params=keep_params)
