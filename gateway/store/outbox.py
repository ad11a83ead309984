"""The outbox's SQL (SPEC §8): claims with a lease, put-backs, expiry, and its numbers.

A queued message is a ``messages`` row with ``next_attempt_at`` set and status ``queued`` or
``sending`` (the partial index ``ix_messages_outbox``). A claim sets ``next_attempt_at`` to the
end of its lease as well, so one condition, ``next_attempt_at <= now``, finds both what is due
and what a dead worker held: an expired lease is simply due again. On PostgreSQL the claim
skips rows another replica is claiming (``FOR UPDATE SKIP LOCKED``); on SQLite the one writer
runs claims one at a time. Leases are renewed while a send runs (``renew``), so a lease shorter
than a slow send does not hand the message to a second worker.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, TextClause, func, select, text, update

from gateway.store.db import Database
from gateway.store.models import AttemptEnd
from gateway.store.schema import attempts, from_us, messages, to_us

# Written as text so SQLite sees the partial index's own condition (a bound IN list hides it).
_OUTBOX = text("messages.status IN ('queued', 'sending')")
PROVIDERS_OPEN = "providers_open"  # messages.waiting: every provider's breaker is open
BACKOFF = "backoff"
_CLAIMED = (messages.c.id, messages.c.caller, messages.c.template, messages.c.numbers,
            messages.c.params, messages.c.created_at, messages.c.expires_at,
            messages.c.callback_url, messages.c.idempotency_key, messages.c.retries)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message a worker holds the lease of; ``unfinished``: the attempt a crash left open
    (written as started, never finished: it may have been sent)."""

    id: str
    caller: str
    template: str
    numbers: tuple[str, ...]
    params: dict[str, str]
    created_at: float
    expires_at: float | None
    callback_url: str | None
    idempotency_key: str | None
    retries: int
    unfinished: int | None = None


@dataclass(frozen=True, slots=True)
class OutboxNumbers:
    """What waits: how many, since when (``oldest``: its created time), how many because every
    provider is open, and when the next one is due (Unix seconds)."""

    depth: int = 0
    oldest: float | None = None
    waiting_open: int = 0
    next_due: float | None = None


class OutboxStore:
    """Claim, renew, put back, release and expire queued messages."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(self, owner: str, lease: float, limit: int) -> list[Claimed]:
        """Up to ``limit`` due messages, now leased to ``owner`` for ``lease`` seconds."""

        def write(conn: Connection) -> list[Claimed]:
            now = self._db.now_us()
            until = now + to_us(lease)
            rows = conn.execute(
                update(messages).where(messages.c.id.in_(_due(conn, now, limit)))
                .values(status="sending", lease_until=until, lease_owner=owner,
                        next_attempt_at=until, updated_at=now, waiting=None)
                .returning(*_CLAIMED)).all()
            if not rows:
                return []
            open_ = dict(conn.execute(
                select(attempts.c.message_id, func.min(attempts.c.seq))
                .where(attempts.c.message_id.in_([r.id for r in rows]),
                       attempts.c.finished_at.is_(None))
                .group_by(attempts.c.message_id)).all())
            return [_claimed(row, open_.get(row.id)) for row in rows]

        return await self._db.write(write)

    async def renew(self, owner: str, ids: Sequence[str], lease: float) -> int:
        """Extend ``owner``'s leases on ``ids`` (messages it is still sending); how many."""
        if not ids:
            return 0

        def write(conn: Connection) -> int:
            until = self._db.now_us() + to_us(lease)
            return conn.execute(
                update(messages).where(messages.c.id.in_(list(ids)),
                                       messages.c.lease_owner == owner,
                                       messages.c.final_at.is_(None))
                .values(lease_until=until, next_attempt_at=until)).rowcount

        return await self._db.write(write)

    async def put_back(self, message_id: str, owner: str, at: float, *, waiting: str,
                       error: str | None, last: AttemptEnd | None = None,
                       retried: bool = True) -> bool:
        """Queue ``message_id`` again for ``at`` (Unix seconds), ending the ``last`` attempt in
        the same transaction; False if ``owner`` no longer holds it (its lease was lost)."""

        def write(conn: Connection) -> bool:
            now = self._db.now_us()
            if last is not None:
                end_attempt(conn, now, message_id, last)
            values: dict[str, Any] = {
                "status": "queued", "next_attempt_at": to_us(at), "lease_until": None,
                "lease_owner": None, "updated_at": now, "waiting": waiting, "error": error}
            if retried:
                values["retries"] = messages.c.retries + 1
            done = conn.execute(
                update(messages).where(messages.c.id == message_id,
                                       messages.c.lease_owner == owner,
                                       messages.c.final_at.is_(None)).values(**values))
            return bool(done.rowcount)

        return await self._db.write(write)

    async def release(self, owner: str) -> int:
        """Give back every message ``owner`` still holds, due now (at shutdown); how many."""

        def write(conn: Connection) -> int:
            now = self._db.now_us()
            return conn.execute(
                update(messages).where(_OUTBOX, messages.c.lease_owner == owner,
                                       messages.c.final_at.is_(None))
                .values(status="queued", lease_until=None, lease_owner=None,
                        next_attempt_at=now, updated_at=now)).rowcount

        return await self._db.write(write)

    async def expire(self, limit: int, *, keep_params: bool) -> list[tuple[str, str | None]]:
        """Mark up to ``limit`` due messages past their ttl ``expired``; (id, callback_url) of
        each. One with an unfinished attempt is left to its claim: it may have been sent, so
        it becomes ``unknown`` there, never ``expired``."""

        def write(conn: Connection) -> list[tuple[str, str | None]]:
            now = self._db.now_us()
            due = _due(conn, now, limit, expired=True)
            values: dict[str, Any] = {
                "status": "expired", "final_at": now, "updated_at": now, "lease_until": None,
                "lease_owner": None, "next_attempt_at": None, "waiting": None,
                "error": func.coalesce(messages.c.error, "not sent before its ttl")}
            if not keep_params:
                values["params"] = None
            rows = conn.execute(
                update(messages).where(messages.c.id.in_(due))
                .values(**values).returning(messages.c.id, messages.c.callback_url))
            return [(row.id, row.callback_url) for row in rows]

        return await self._db.write(write)

    async def numbers(self) -> OutboxNumbers:
        """Depth, oldest, waiting-for-providers and the next due time, in one read."""

        def read(conn: Connection) -> OutboxNumbers:
            depth, oldest = conn.execute(_sql(conn, _DEPTH)).one()
            waiting = conn.scalar(_sql(conn, _WAITING).bindparams(b_waiting=PROVIDERS_OPEN))
            return OutboxNumbers(int(depth), from_us(oldest), int(waiting or 0),
                                 _next_due(conn))

        return await self._db.read(read)

    async def next_due(self) -> float | None:
        """When the next queued message is due (Unix seconds), or None: nothing queued."""

        return await self._db.read(_next_due)


def end_attempt(conn: Connection, now: int, message_id: str, end: AttemptEnd) -> None:
    """Write how attempt ``end.seq`` ended (if it is still open)."""
    conn.execute(update(attempts).where(
        attempts.c.message_id == message_id, attempts.c.seq == end.seq,
        attempts.c.finished_at.is_(None)).values(
        finished_at=now, outcome=end.outcome, error=end.error,
        provider_message_id=end.provider_message_id))


# Whole statements per engine, every value bound. SQLite, without statistics, would rather scan
# ix_messages_status_created and sort: INDEXED BY keeps it on the outbox's partial indexes,
# whose conditions the queries repeat word for word. PostgreSQL's planner needs no hint; its
# claims skip rows another replica's claim holds (SKIP LOCKED); SQLite has one writer.
_DUE = {
    "sqlite": "SELECT id FROM messages INDEXED BY ix_messages_outbox "
              "WHERE status IN ('queued', 'sending') AND next_attempt_at <= :b_now "
              "ORDER BY next_attempt_at LIMIT :b_limit",
    "postgresql": "SELECT id FROM messages "
                  "WHERE status IN ('queued', 'sending') AND next_attempt_at <= :b_now "
                  "ORDER BY next_attempt_at LIMIT :b_limit FOR UPDATE SKIP LOCKED",
}
_EXPIRED = {  # past the ttl, and no attempt left unfinished (that one becomes unknown)
    "sqlite": "SELECT id FROM messages INDEXED BY ix_messages_outbox_expires "
              "WHERE status IN ('queued', 'sending') AND next_attempt_at IS NOT NULL "
              "AND expires_at <= :b_now AND next_attempt_at <= :b_now AND NOT EXISTS "
              "(SELECT 1 FROM attempts WHERE attempts.message_id = messages.id "
              "AND attempts.finished_at IS NULL) LIMIT :b_limit",
    "postgresql": "SELECT id FROM messages "
                  "WHERE status IN ('queued', 'sending') AND next_attempt_at IS NOT NULL "
                  "AND expires_at <= :b_now AND next_attempt_at <= :b_now AND NOT EXISTS "
                  "(SELECT 1 FROM attempts WHERE attempts.message_id = messages.id "
                  "AND attempts.finished_at IS NULL) LIMIT :b_limit FOR UPDATE SKIP LOCKED",
}
_DEPTH = {
    "sqlite": "SELECT count(*), min(created_at) FROM messages "
              "INDEXED BY ix_messages_outbox_created "
              "WHERE status IN ('queued', 'sending') AND next_attempt_at IS NOT NULL",
    "postgresql": "SELECT count(*), min(created_at) FROM messages "
                  "WHERE status IN ('queued', 'sending') AND next_attempt_at IS NOT NULL",
}
_WAITING = {
    "sqlite": "SELECT count(*) FROM messages INDEXED BY ix_messages_outbox_waiting "
              "WHERE status IN ('queued', 'sending') AND next_attempt_at IS NOT NULL "
              "AND waiting = :b_waiting",
    "postgresql": "SELECT count(*) FROM messages "
                  "WHERE status IN ('queued', 'sending') AND next_attempt_at IS NOT NULL "
                  "AND waiting = :b_waiting",
}
_NEXT_DUE = {
    "sqlite": "SELECT min(next_attempt_at) FROM messages INDEXED BY ix_messages_outbox "
              "WHERE status IN ('queued', 'sending') AND next_attempt_at IS NOT NULL",
    "postgresql": "SELECT min(next_attempt_at) FROM messages "
                  "WHERE status IN ('queued', 'sending') AND next_attempt_at IS NOT NULL",
}


def _sql(conn: Connection, statements: dict[str, str]) -> TextClause:
    return text(statements[conn.dialect.name])


def _due(conn: Connection, now: int, limit: int, *, expired: bool = False) -> Any:
    """The ids of up to ``limit`` due messages, oldest due first (with ``expired``: only those
    past their ttl with no unfinished attempt)."""
    return (_sql(conn, _EXPIRED if expired else _DUE).bindparams(b_now=now, b_limit=limit)
            .columns(messages.c.id))


def _next_due(conn: Connection) -> float | None:
    return from_us(conn.scalar(_sql(conn, _NEXT_DUE)))


def _claimed(row: Any, unfinished: int | None) -> Claimed:
    return Claimed(row.id, row.caller, row.template, tuple(json.loads(row.numbers)),
                   json.loads(row.params) if row.params else {}, from_us(row.created_at) or 0.0,
                   from_us(row.expires_at), row.callback_url, row.idempotency_key,
                   int(row.retries), unfinished)
