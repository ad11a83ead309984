"""The status callbacks' durable queue (SPEC §8): a row per callback still to be delivered.

Enqueued in one write; claimed with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
replicas share the queue), so a sender that dies holding one leaves it to be claimed again once
the lease has passed; deleted once delivered or given up. The callback's event is read from the
message's status in the same statement that enqueues it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Connection,
    Text,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)

from gateway.store.db import Database
from gateway.store.errors import UnknownMessageError
from gateway.store.listing import fetch_many
from gateway.store.models import MessageRecord
from gateway.store.schema import callbacks, from_us, messages, to_us

_ERROR_CHARS = 500  # last_error is for an operator's eye: the reason, never a body


@dataclass(frozen=True, slots=True)
class CallbackJob:
    """A claimed callback: POST the message's record to ``url``."""

    id: int
    message_id: str
    url: str
    event: str  # final | delivery
    attempts: int  # this one included
    created_at: float


@dataclass(frozen=True, slots=True)
class QueueState:
    """How many callbacks wait, and when the earliest may be claimed (None: none wait)."""

    depth: int
    next_due: float | None


class CallbackQueue:
    """Enqueue, claim, settle and count queued callbacks."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def enqueue(self, message_id: str, url: str) -> str:
        """Queue a callback of ``message_id``'s record to ``url``, due now; its event
        (``delivery`` once a receipt moved the message, else ``final``). UnknownMessageError
        if there is no such message."""

        def write(conn: Connection) -> str:
            now = self._db.now_us()
            event = case((messages.c.status.in_(("delivered", "undelivered")), "delivery"),
                         else_="final")
            source = select(messages.c.id, literal(url, Text), event, literal(now, BigInteger),
                            literal(now, BigInteger)).where(messages.c.id == message_id)
            inserted = conn.execute(callbacks.insert().from_select(
                ["message_id", "url", "event", "next_attempt_at", "created_at"], source)
                .returning(callbacks.c.event)).scalar()
            if inserted is None:
                raise UnknownMessageError(message_id)
            return str(inserted)

        return await self._db.write(write)

    async def claim(self, owner: str, limit: int, lease: float) -> list[CallbackJob]:
        """Up to ``limit`` due callbacks, leased to ``owner`` for ``lease`` seconds (their
        attempt counted now: a crash mid-POST was an attempt)."""

        def write(conn: Connection) -> list[CallbackJob]:
            now = self._db.now_us()
            due = (select(callbacks.c.id)
                   .where(callbacks.c.next_attempt_at <= now,
                          or_(callbacks.c.lease_until.is_(None), callbacks.c.lease_until <= now))
                   .order_by(callbacks.c.next_attempt_at).limit(limit)
                   .with_for_update(skip_locked=True))
            rows = conn.execute(
                update(callbacks).where(callbacks.c.id.in_(due.scalar_subquery()))
                .values(attempts=callbacks.c.attempts + 1, lease_until=now + to_us(lease),
                        lease_owner=owner)
                .returning(callbacks.c.id, callbacks.c.message_id, callbacks.c.url,
                           callbacks.c.event, callbacks.c.attempts, callbacks.c.created_at))
            return sorted((CallbackJob(r.id, r.message_id, r.url, r.event, r.attempts,
                                       from_us(r.created_at) or 0.0) for r in rows),
                          key=lambda job: job.id)

        return await self._db.write(write)

    async def remove(self, callback_id: int) -> None:
        """Delivered, or given up: the row goes."""
        await self._db.write(
            lambda conn: conn.execute(delete(callbacks).where(callbacks.c.id == callback_id)))

    async def retry(self, callback_id: int, at: float, error: str) -> None:
        """Not delivered: due again at ``at`` (Unix seconds), lease released."""
        await self._db.write(lambda conn: conn.execute(
            update(callbacks).where(callbacks.c.id == callback_id)
            .values(next_attempt_at=to_us(at), lease_until=None, lease_owner=None,
                    last_error=error[:_ERROR_CHARS])))

    async def release(self, callback_ids: Sequence[int]) -> None:
        """Give claimed callbacks back unsent (a stop): due at once, their attempt uncounted."""
        if not callback_ids:
            return
        await self._db.write(lambda conn: conn.execute(
            update(callbacks).where(callbacks.c.id.in_(list(callback_ids)))
            .values(attempts=func.max(callbacks.c.attempts - 1, 0)
                    if conn.dialect.name == "sqlite"
                    else func.greatest(callbacks.c.attempts - 1, 0),
                    lease_until=None, lease_owner=None)))

    async def records(self, message_ids: Sequence[str]) -> dict[str, MessageRecord]:
        """The current records of ``message_ids`` that are still retained, by id: one read."""
        return await self._db.read(
            lambda conn: {r.id: r for r in fetch_many(conn, message_ids)})

    async def state(self) -> QueueState:
        """The queue's depth and when its earliest callback may be claimed."""

        def read(conn: Connection) -> QueueState:
            ready_at = case((callbacks.c.lease_until > callbacks.c.next_attempt_at,
                             callbacks.c.lease_until), else_=callbacks.c.next_attempt_at)
            row = conn.execute(
                select(func.count(), func.min(ready_at)).select_from(callbacks)).one()
            return QueueState(int(row[0]), from_us(row[1]))

        return await self._db.read(read)

