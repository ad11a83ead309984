"""Message records: written before any provider call, each attempt around its call."""

from __future__ import annotations

import json
from collections.abc import Mapping

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.store.db import Database
from gateway.store.errors import UnknownMessageError
from gateway.store.listing import fetch_one, fetch_page
from gateway.store.models import FINAL, ListQuery, MessageRecord, NewMessage, Page
from gateway.store.schema import attempts, messages, recipients, to_us

RETENTION_BATCH = 500


class Records:
    """Create, update, read and expire message records."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, new: NewMessage) -> None:
        """Write the message (status ``sending``, or ``queued`` when async) and its numbers."""
        numbers = list(dict.fromkeys(new.numbers))  # one row per distinct number

        async def write(conn: AsyncConnection) -> None:
            now = self._db.now_us()
            await conn.execute(messages.insert().values(
                id=new.id, caller=new.caller, template=new.template,
                numbers=json.dumps(list(new.numbers)),
                params=None if new.params is None else json.dumps(dict(new.params)),
                mode=new.mode, status="queued" if new.mode == "async" else "sending",
                created_at=now, updated_at=now,
                expires_at=None if new.expires_at is None else to_us(new.expires_at),
                next_attempt_at=now if new.mode == "async" else None,
                callback_url=new.callback_url, idempotency_key=new.idempotency_key))
            await conn.execute(recipients.insert(), [
                {"message_id": new.id, "number": number, "created_at": now}
                for number in numbers])

        await self._db.write(write)

    async def attempt_started(self, message_id: str, provider: str) -> int:
        """Record that ``provider`` is about to be called; the attempt's sequence number."""

        async def write(conn: AsyncConnection) -> int:
            now = self._db.now_us()
            # The row lock of this UPDATE makes the count race-free across replicas too.
            seq = (await conn.execute(
                update(messages).where(messages.c.id == message_id)
                .values(attempts=messages.c.attempts + 1, status="sending", updated_at=now)
                .returning(messages.c.attempts))).scalar()
            if seq is None:
                raise UnknownMessageError(message_id)
            await conn.execute(attempts.insert().values(
                message_id=message_id, seq=seq, provider=provider, started_at=now))
            return int(seq)

        return await self._db.write(write)

    async def attempt_finished(self, message_id: str, seq: int, outcome: str, *,
                               error: str | None = None,
                               provider_message_id: str | None = None,
                               recipient_ids: Mapping[str, str] | None = None) -> None:
        """Record how attempt ``seq`` ended; ``recipient_ids``: number -> per-recipient id."""

        async def write(conn: AsyncConnection) -> None:
            done = await conn.execute(
                update(attempts)
                .where(attempts.c.message_id == message_id, attempts.c.seq == seq)
                .values(finished_at=self._db.now_us(), outcome=outcome, error=error,
                        provider_message_id=provider_message_id))
            if done.rowcount == 0:
                raise UnknownMessageError(f"{message_id} attempt {seq}")
            for number, per_recipient in (recipient_ids or {}).items():
                await conn.execute(
                    update(recipients)
                    .where(recipients.c.message_id == message_id, recipients.c.number == number)
                    .values(provider_message_id=per_recipient))

        await self._db.write(write)

    async def finish(self, message_id: str, status: str, *, provider: str | None = None,
                     provider_message_id: str | None = None, error: str | None = None,
                     keep_params: bool = False) -> bool:
        """Set the final status once (params erased unless ``keep_params``); False if it was
        already final (a final status is never overwritten here; receipts move ``sent`` on)."""
        if status not in FINAL:
            raise ValueError(f"{status!r} is not a final status ({', '.join(sorted(FINAL))})")

        async def write(conn: AsyncConnection) -> bool:
            now = self._db.now_us()
            values: dict[str, object] = {
                "status": status, "final_at": now, "updated_at": now, "provider": provider,
                "provider_message_id": provider_message_id, "error": error,
                "lease_until": None, "lease_owner": None, "next_attempt_at": None}
            if not keep_params:
                values["params"] = None
            done = await conn.execute(
                update(messages)
                .where(messages.c.id == message_id, messages.c.final_at.is_(None))
                .values(values))
            if done.rowcount == 0:
                exists = await conn.scalar(select(messages.c.id).where(messages.c.id == message_id))
                if exists is None:
                    raise UnknownMessageError(message_id)
                return False
            return True

        return await self._db.write(write)

    async def get(self, message_id: str) -> MessageRecord | None:
        """The record with its attempts and recipients, or None."""
        return await self._db.read(lambda conn: fetch_one(conn, message_id))

    async def list(self, query: ListQuery) -> Page:
        """A page of records, newest first; pass ``next_cursor`` back for the next page."""
        return await self._db.read(lambda conn: fetch_page(conn, query))

    async def purge(self, before: float, batch: int = RETENTION_BATCH) -> int:
        """Delete records created before ``before``, ``batch`` per transaction, so sends queued
        meanwhile are written between batches; how many were deleted."""
        cutoff = to_us(before)
        total = 0
        while True:
            deleted = await self._db.write(lambda conn: _purge_batch(conn, cutoff, batch))
            total += deleted
            if deleted < batch:
                return total


async def _purge_batch(conn: AsyncConnection, cutoff: int, batch: int) -> int:
    ids = list((await conn.scalars(
        select(messages.c.id).where(messages.c.created_at < cutoff)
        .order_by(messages.c.created_at).limit(batch))).all())
    if ids:
        # Children first: correct whether or not the engine enforces ON DELETE CASCADE.
        await conn.execute(delete(attempts).where(attempts.c.message_id.in_(ids)))
        await conn.execute(delete(recipients).where(recipients.c.message_id.in_(ids)))
        await conn.execute(delete(messages).where(messages.c.id.in_(ids)))
    return len(ids)
