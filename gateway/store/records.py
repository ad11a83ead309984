"""Message records: written before any provider call, each attempt around its call."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import BindParameter, Connection, bindparam, delete, select, update

from gateway.store import records_pg
from gateway.store.db import Database
from gateway.store.errors import UnknownMessageError
from gateway.store.listing import fetch_one, fetch_page
from gateway.store.models import FINAL, AttemptEnd, ListQuery, MessageRecord, NewMessage, Page
from gateway.store.prepared import Prepared
from gateway.store.schema import attempts, messages, recipients, to_us
from gateway.store.writer import Bulk

RETENTION_BATCH = 200
ID_WIDTH = 255  # the provider_message_id columns
CODE_WIDTH = 64  # recipients.code

# The send path's statements, compiled once (see prepared.py). Bound names differ from column
# names: SQLAlchemy reserves those for the SET values.
_MID: BindParameter[str] = bindparam("b_mid")
_MESSAGE_KEYS = ("id", "caller", "template", "numbers", "params", "mode", "status", "created_at",
                 "updated_at", "expires_at", "next_attempt_at", "callback_url", "idempotency_key",
                 "attempts")
_INSERT_MESSAGE = Prepared(messages.insert(), _MESSAGE_KEYS)
_INSERT_RECIPIENT = Prepared(recipients.insert(), ("message_id", "number", "created_at"))
_INSERT_ATTEMPT = Prepared(attempts.insert(), ("message_id", "seq", "provider", "started_at"))
_START = Prepared(
    update(messages).where(messages.c.id == _MID)
    .values(attempts=messages.c.attempts + 1, status="sending", updated_at=bindparam("b_now"))
    .returning(messages.c.attempts), ())
_END_ATTEMPT = Prepared(
    update(attempts).where(attempts.c.message_id == _MID, attempts.c.seq == bindparam("b_seq")),
    ("finished_at", "outcome", "error", "provider_message_id"))
_REFUSED = Prepared(
    update(recipients).where(recipients.c.message_id == _MID,
                             recipients.c.number == bindparam("b_number")),
    ("status", "code", "at"))
_RECIPIENT_ID = Prepared(
    update(recipients).where(recipients.c.message_id == _MID,
                             recipients.c.number == bindparam("b_number")),
    ("provider_message_id",))
_FINISH_KEYS = ("status", "final_at", "updated_at", "provider", "provider_message_id", "error",
                "lease_until", "lease_owner", "next_attempt_at")
_FINISHING = update(messages).where(messages.c.id == _MID, messages.c.final_at.is_(None))
_FINISH = Prepared(_FINISHING, _FINISH_KEYS)
_FINISH_ERASING = Prepared(_FINISHING, (*_FINISH_KEYS, "params"))
_EXISTS = select(messages.c.id).where(messages.c.id == _MID)


class RecordStore:
    """Create, update, read and expire message records."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, new: NewMessage, provider: str | None = None) -> int | None:
        """Write the message (status ``sending``, or ``queued`` when async) and its numbers;
        with ``provider``, also its first attempt (one transaction: the send path's first
        write), and then that attempt's sequence number."""
        numbers = list(dict.fromkeys(new.numbers))  # one row per distinct number
        seq = None if provider is None else 1

        def columns(now: int) -> dict[str, Any]:
            return {
                "id": new.id, "caller": new.caller, "template": new.template,
                "numbers": json.dumps(list(new.numbers)),
                "params": None if new.params is None else json.dumps(dict(new.params)),
                "mode": new.mode,
                "status": "queued" if new.mode == "async" and provider is None else "sending",
                "expires_at": None if new.expires_at is None else to_us(new.expires_at),
                "next_attempt_at": now if new.mode == "async" else None,
                "callback_url": new.callback_url, "idempotency_key": new.idempotency_key,
                # A new row: its first attempt is counted here, not by _start's UPDATE.
                "attempts": 0 if provider is None else 1}

        if self._db.postgresql:  # one statement (records_pg), run with others when it can
            now = self._db.now_us()
            params = records_pg.create_params(now, columns(now), numbers, provider)

            def alone(conn: Connection) -> int | None:
                records_pg.CREATE.execute(conn, params)
                return seq

            return await self._db.write(alone, Bulk(records_pg.CREATE, params, seq))

        def write(conn: Connection) -> int | None:
            now = self._db.now_us()
            _INSERT_MESSAGE.execute(conn, {**columns(now), "created_at": now, "updated_at": now})
            if len(numbers) == 1:  # the common case: one statement, not a driver loop
                _INSERT_RECIPIENT.execute(conn, {"message_id": new.id, "number": numbers[0],
                                                 "created_at": now})
            else:
                _INSERT_RECIPIENT.many(conn, [
                    {"message_id": new.id, "number": number, "created_at": now}
                    for number in numbers])
            if provider is None:
                return None
            _INSERT_ATTEMPT.execute(conn, {"message_id": new.id, "seq": 1, "provider": provider,
                                           "started_at": now})
            return seq

        return await self._db.write(write)

    async def attempt_started(self, message_id: str, provider: str,
                              previous: AttemptEnd | None = None) -> int:
        """Record that ``provider`` is about to be called (and, in the same transaction, how
        the ``previous`` attempt ended); the attempt's sequence number."""

        if self._db.postgresql:  # one statement (records_pg)
            return await self._db.write(lambda conn: records_pg.start(
                conn, self._db.now_us(), message_id, provider, previous))

        def write(conn: Connection) -> int:
            now = self._db.now_us()
            if previous is not None:
                _end(conn, now, message_id, previous)
            return _start(conn, now, message_id, provider)

        return await self._db.write(write)

    async def attempt_finished(self, message_id: str, seq: int, outcome: str, *,
                               error: str | None = None,
                               provider_message_id: str | None = None,
                               recipient_ids: Mapping[str, str] | None = None) -> None:
        """Record how attempt ``seq`` ended; ``recipient_ids``: number -> per-recipient id."""
        recipient_ids = _fitting(recipient_ids)

        ended = AttemptEnd(seq, outcome, error, provider_message_id)
        if self._db.postgresql:  # one statement (records_pg)
            await self._db.write(lambda conn: records_pg.end(
                conn, self._db.now_us(), message_id, ended, recipient_ids))
            return

        def write(conn: Connection) -> None:
            _end(conn, self._db.now_us(), message_id, ended)
            if recipient_ids:
                _RECIPIENT_ID.many(conn, [
                    {"b_mid": message_id, "b_number": number, "provider_message_id": one}
                    for number, one in recipient_ids.items()])

        await self._db.write(write)

    async def finish(self, message_id: str, status: str, *, provider: str | None = None,
                     provider_message_id: str | None = None, error: str | None = None,
                     keep_params: bool = False, last: AttemptEnd | None = None,
                     refused: Mapping[str, str] | None = None,
                     recipient_ids: Mapping[str, str] | None = None) -> bool:
        """Set the final status once (params erased unless ``keep_params``); False if it was
        already final (a final status is never overwritten here; receipts move ``sent`` on).
        In the same transaction: how the ``last`` attempt ended, and the numbers the provider
        ``refused`` (number -> its code; recipient status ``refused``), and each recipient's
        provider message id (``recipient_ids``: number -> id; receipts match by it)."""
        if status not in FINAL:
            raise ValueError(f"{status!r} is not a final status ({', '.join(sorted(FINAL))})")
        recipient_ids = _fitting(recipient_ids)
        if refused:
            refused = {number: code[:CODE_WIDTH] for number, code in refused.items()}

        if self._db.postgresql:  # one statement (records_pg), run with others when it can
            params = records_pg.finish_params(self._db.now_us(), message_id, {
                "status": status, "provider": provider,
                "provider_message_id": provider_message_id, "error": error,
                "keep_params": keep_params}, last, refused, recipient_ids)
            return await self._db.write(lambda conn: records_pg.finish(conn, params, last),
                                        Bulk(records_pg.FINISH_SURE, params, True))

        def write(conn: Connection) -> bool:
            now = self._db.now_us()
            if last is not None:
                _end(conn, now, message_id, last)
            if refused:
                _REFUSED.many(conn, [
                    {"b_mid": message_id, "b_number": number, "status": "refused",
                     "code": code, "at": now} for number, code in refused.items()])
            if recipient_ids:
                _RECIPIENT_ID.many(conn, [
                    {"b_mid": message_id, "b_number": number, "provider_message_id": one}
                    for number, one in recipient_ids.items()])
            values: dict[str, object] = {
                "b_mid": message_id, "status": status, "final_at": now, "updated_at": now,
                "provider": provider, "provider_message_id": provider_message_id, "error": error,
                "lease_until": None, "lease_owner": None, "next_attempt_at": None}
            if not keep_params:
                values["params"] = None
            done = (_FINISH if keep_params else _FINISH_ERASING).count(conn, values)
            if done == 0:
                if conn.scalar(_EXISTS, {"b_mid": message_id}) is None:
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
        meanwhile are written between batches; how many were deleted. After each batch it
        pauses as long as the batch took: a long pass leaves the writer to sends half the
        time, so their writes never queue behind batch after batch."""
        cutoff = to_us(before)
        total = 0
        while True:
            started = time.monotonic()
            deleted = await self._db.write(lambda conn: _purge_batch(conn, cutoff, batch))
            total += deleted
            if deleted < batch:
                return total
            await asyncio.sleep(time.monotonic() - started)


def _fitting(recipient_ids: Mapping[str, str] | None) -> Mapping[str, str] | None:
    """The per-recipient ids a column holds: a provider's answer is input, and an id too long
    to keep whole could never match a receipt (left out, rather than failing the write)."""
    if not recipient_ids or all(len(one) <= ID_WIDTH for one in recipient_ids.values()):
        return recipient_ids
    return {number: one for number, one in recipient_ids.items() if len(one) <= ID_WIDTH}


def _start(conn: Connection, now: int, message_id: str, provider: str) -> int:
    # The row lock of this UPDATE makes the count race-free across replicas too.
    seq = _START.one(conn, {"b_mid": message_id, "b_now": now})
    if seq is None:
        raise UnknownMessageError(message_id)
    _INSERT_ATTEMPT.execute(conn, {"message_id": message_id, "seq": seq, "provider": provider,
                                   "started_at": now})
    return int(seq)


def _end(conn: Connection, now: int, message_id: str, end: AttemptEnd) -> None:
    done = _END_ATTEMPT.count(conn, {
        "b_mid": message_id, "b_seq": end.seq, "finished_at": now, "outcome": end.outcome,
        "error": end.error, "provider_message_id": end.provider_message_id})
    if done == 0:
        raise UnknownMessageError(f"{message_id} attempt {end.seq}")


def _purge_batch(conn: Connection, cutoff: int, batch: int) -> int:
    ids = list((conn.scalars(
        select(messages.c.id).where(messages.c.created_at < cutoff)
        .order_by(messages.c.created_at).limit(batch))).all())
    if ids:
        # Children first: correct whether or not the engine enforces ON DELETE CASCADE.
        conn.execute(delete(attempts).where(attempts.c.message_id.in_(ids)))
        conn.execute(delete(recipients).where(recipients.c.message_id.in_(ids)))
        conn.execute(delete(messages).where(messages.c.id.in_(ids)))
    return len(ids)
