"""Durable ``Idempotency-Key`` claims: the row is the lock, so one key sends once.

A claim inserts (caller, key) with ON CONFLICT DO NOTHING. The primary key decides the race,
within one process (the single writer), across processes on one SQLite file (BEGIN IMMEDIATE)
and across replicas on PostgreSQL (the second insert waits for the first to commit).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.store.db import Database, insert
from gateway.store.schema import idempotency, to_us

DEFAULT_TTL = 24 * 3600.0
EXPIRE_BATCH = 500


@dataclass(frozen=True, slots=True)
class New:
    """The key is now claimed by this request: send, then ``complete`` (or ``release``)."""


@dataclass(frozen=True, slots=True)
class Replay:
    """The key was used with this body and answered: answer the same, contact no provider."""

    status_code: int
    response: dict[str, Any]
    message_id: str | None


@dataclass(frozen=True, slots=True)
class Conflict:
    """The key is taken: by a request still in flight, or by a different body."""

    reason: Literal["in_flight", "different_body"]


Claim = New | Replay | Conflict


def body_hash(body: bytes) -> str:
    """The fingerprint stored for a request body (what "the same body" compares)."""
    return hashlib.sha256(body).hexdigest()


class Idempotency:
    """Claim, complete, release and expire keys; each key lives ``ttl`` seconds."""

    def __init__(self, db: Database, ttl: float = DEFAULT_TTL) -> None:
        self._db = db
        self._ttl = ttl

    async def claim(self, caller: str, key: str, fingerprint: str,
                    message_id: str | None = None) -> Claim:
        """Claim ``key`` for ``caller``'s request with body ``fingerprint``."""

        async def write(conn: AsyncConnection) -> Claim:
            now = self._db.now_us()
            mine = (idempotency.c.caller == caller) & (idempotency.c.key == key)
            await conn.execute(delete(idempotency).where(mine, idempotency.c.expires_at <= now))
            taken = await conn.execute(
                insert(conn, idempotency)
                .values(caller=caller, key=key, body_hash=fingerprint, state="in_flight",
                        message_id=message_id, created_at=now,
                        expires_at=now + to_us(self._ttl))
                .on_conflict_do_nothing(index_elements=["caller", "key"])
                .returning(idempotency.c.key))
            if taken.first() is not None:
                return New()
            row = (await conn.execute(select(idempotency).where(mine))).one()
            if row.body_hash != fingerprint:
                return Conflict("different_body")
            if row.state != "done":
                return Conflict("in_flight")
            return Replay(row.status_code, json.loads(row.response), row.message_id)

        return await self._db.write(write)

    async def complete(self, caller: str, key: str, status_code: int,
                       response: Mapping[str, Any], message_id: str | None = None) -> None:
        """Keep the answer: repeats of this key and body get it back until the key expires."""
        values: dict[str, Any] = {"state": "done", "status_code": status_code,
                                  "response": json.dumps(dict(response), ensure_ascii=False)}
        if message_id is not None:
            values["message_id"] = message_id

        async def write(conn: AsyncConnection) -> None:
            await conn.execute(update(idempotency).where(
                idempotency.c.caller == caller, idempotency.c.key == key).values(values))

        await self._db.write(write)

    async def release(self, caller: str, key: str) -> None:
        """Free an in-flight key: nothing was sent, so a retry with it may send."""

        async def write(conn: AsyncConnection) -> None:
            await conn.execute(delete(idempotency).where(
                idempotency.c.caller == caller, idempotency.c.key == key,
                idempotency.c.state == "in_flight"))

        await self._db.write(write)

    async def expire(self, batch: int = EXPIRE_BATCH) -> int:
        """Delete keys past their ttl, ``batch`` per transaction; how many."""
        total = 0
        while True:
            deleted = await self._db.write(lambda conn: _expire_batch(conn, self._db.now_us(),
                                                                      batch))
            total += deleted
            if deleted < batch:
                return total


async def _expire_batch(conn: AsyncConnection, now: int, batch: int) -> int:
    pk = tuple_(idempotency.c.caller, idempotency.c.key)
    done = await conn.execute(delete(idempotency).where(pk.in_(
        select(idempotency.c.caller, idempotency.c.key)
        .where(idempotency.c.expires_at <= now).limit(batch))))
    return int(done.rowcount)
