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

from sqlalchemy import Connection, bindparam, delete, select, tuple_, update

from gateway.store.db import Database, dialect_insert
from gateway.store.prepared import Prepared
from gateway.store.schema import idempotency, messages, to_us

DEFAULT_TTL = 24 * 3600.0
EXPIRE_BATCH = 500

# The claim runs on every request with a key: its statements are compiled once (prepared.py).
_MINE = ((idempotency.c.caller == bindparam("b_caller"))
         & (idempotency.c.key == bindparam("b_key")))
_DROP_EXPIRED = Prepared(delete(idempotency).where(
    _MINE, idempotency.c.expires_at <= bindparam("b_now")), ())
_CLAIM = Prepared(
    lambda dialect: dialect_insert(dialect, idempotency)
    .on_conflict_do_nothing(index_elements=["caller", "key"]).returning(idempotency.c.key),
    ("caller", "key", "body_hash", "state", "message_id", "created_at", "expires_at"))
_SEEN = select(idempotency).where(_MINE)
_COMPLETE_KEYS = ("state", "status_code", "response")
_COMPLETE = Prepared(update(idempotency).where(_MINE), _COMPLETE_KEYS)
_COMPLETE_WITH_ID = Prepared(update(idempotency).where(_MINE), (*_COMPLETE_KEYS, "message_id"))


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
class KeyConflict:
    """The key is taken: by a request still in flight, or by a different body."""

    reason: Literal["in_flight", "different_body"]


@dataclass(frozen=True, slots=True)
class Recovered:
    """The key's request was cut short by a crash (its claim outlived any live send) after its
    record was written: answer from that record, whose sending may be over or was interrupted."""

    message_id: str


Claim = New | Replay | KeyConflict | Recovered
# Records whose retry may send: nothing went out (every provider failed, a per-recipient limit,
# an async message that expired). Any other record is answered from, never sent again.
_NOT_SENT = ("failed", "rate_limited", "expired")


def body_hash(body: bytes) -> str:
    """The fingerprint stored for a request body (what "the same body" compares)."""
    return hashlib.sha256(body).hexdigest()


class Idempotency:
    """Claim, complete, release and expire keys; each key lives ``ttl`` seconds."""

    def __init__(self, db: Database, ttl: float = DEFAULT_TTL) -> None:
        self._db = db
        self._ttl = ttl

    async def claim(self, caller: str, key: str, fingerprint: str,
                    message_id: str | None = None, *, stale_after: float | None = None) -> Claim:
        """Claim ``key`` for ``caller``'s request with body ``fingerprint``. An in-flight claim
        older than ``stale_after`` seconds (longer than any send can take) was left by a crash:
        ``Recovered`` if its record says a provider may have been called, else it is taken
        over (``New``): nothing was sent."""

        def write(conn: Connection) -> Claim:
            now = self._db.now_us()
            mine = {"b_caller": caller, "b_key": key}
            _DROP_EXPIRED.execute(conn, {**mine, "b_now": now})
            taken = _CLAIM.one(conn, {
                "caller": caller, "key": key, "body_hash": fingerprint, "state": "in_flight",
                "message_id": message_id, "created_at": now,
                "expires_at": now + to_us(self._ttl)})
            if taken is not None:
                return New()
            row = conn.execute(_SEEN, mine).one()
            if row.body_hash != fingerprint:
                return KeyConflict("different_body")
            if row.state != "done":
                if stale_after is None or row.created_at > now - to_us(stale_after):
                    return KeyConflict("in_flight")
                return _recover(conn, mine, row.created_at, now, to_us(self._ttl))
            return Replay(row.status_code, json.loads(row.response), row.message_id)

        return await self._db.write(write)

    async def complete(self, caller: str, key: str, status_code: int,
                       response: Mapping[str, Any], message_id: str | None = None) -> None:
        """Keep the answer: repeats of this key and body get it back until the key expires."""
        values: dict[str, Any] = {
            "b_caller": caller, "b_key": key, "state": "done", "status_code": status_code,
            "response": json.dumps(dict(response), ensure_ascii=False)}
        statement = _COMPLETE
        if message_id is not None:
            values["message_id"] = message_id
            statement = _COMPLETE_WITH_ID

        def write(conn: Connection) -> None:
            statement.execute(conn, values)

        await self._db.write(write)

    async def release(self, caller: str, key: str) -> None:
        """Free an in-flight key: nothing was sent, so a retry with it may send."""

        def write(conn: Connection) -> None:
            conn.execute(delete(idempotency).where(
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


def _expire_batch(conn: Connection, now: int, batch: int) -> int:
    pk = tuple_(idempotency.c.caller, idempotency.c.key)
    done = conn.execute(delete(idempotency).where(pk.in_(
        select(idempotency.c.caller, idempotency.c.key)
        .where(idempotency.c.expires_at <= now).limit(batch))))
    return int(done.rowcount)


def _recover(conn: Connection, mine: dict[str, str], claimed_at: int, now: int,
             ttl_us: int) -> Claim:
    """A crash's leftover claim: its send's record (written after the claim), or a new claim."""
    found = conn.execute(
        select(messages.c.id, messages.c.status)
        .where(messages.c.caller == mine["b_caller"],
               messages.c.idempotency_key == mine["b_key"], messages.c.created_at >= claimed_at)
        .order_by(messages.c.created_at.desc()).limit(1)).first()
    if found is not None and found.status not in _NOT_SENT:
        return Recovered(found.id)
    conn.execute(update(idempotency).where(_MINE).values(
        created_at=now, expires_at=now + ttl_us, message_id=None), mine)
    return New()
