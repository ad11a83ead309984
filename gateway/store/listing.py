"""Reading records: one by id, or a page by filters with an opaque keyset cursor.

The cursor is the (created_at, id) of the last record shown; the next page is what sorts
strictly after it, newest first. Records written meanwhile are newer than any cursor handed out,
so they never shift a page: nothing repeats and nothing is skipped.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Row,
    and_,
    bindparam,
    or_,
    select,
)

from gateway.store.errors import BadQueryError
from gateway.store.models import (
    MAX_LIMIT,
    STATUSES,
    ListQuery,
    MessageRecord,
    Page,
    Recipient,
    StoredAttempt,
)
from gateway.store.prepared import Prepared
from gateway.store.schema import attempts, from_us, messages, recipients, to_us

_CURSOR_VERSION = "c1"


def encode_cursor(created_us: int, message_id: str) -> str:
    """The opaque cursor for a page that ends at this record."""
    raw = json.dumps([_CURSOR_VERSION, created_us, message_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """(created_us, id) from a cursor; BadQueryError naming ``cursor`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, created_us, message_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise BadQueryError("cursor", "not a cursor this gateway handed out") from None
    if version != _CURSOR_VERSION or type(created_us) is not int or not isinstance(message_id, str):
        raise BadQueryError("cursor", "not a cursor this gateway handed out")
    return created_us, message_id


def fetch_one(conn: Connection, message_id: str) -> MessageRecord | None:
    """One record with its attempts and recipients."""
    row = (conn.execute(select(messages).where(messages.c.id == message_id))).first()
    if row is None:
        return None
    return (_complete(conn, [row]))[0]


def fetch_many(conn: Connection, message_ids: Sequence[str]) -> list[MessageRecord]:
    """The records of ``message_ids`` that exist (in no set order), with their attempts and
    recipients: three queries for the lot."""
    rows = list(conn.execute(select(messages).where(messages.c.id.in_(set(message_ids)))))
    return _complete(conn, rows)


def fetch_page(conn: Connection, query: ListQuery) -> Page:
    """The page ``query`` asks for."""
    check(query)
    if query.to is not None:
        # Through the (number, created_at, message_id) index: a number's history stays cheap.
        created, ident = recipients.c.created_at, recipients.c.message_id
        stmt = (select(messages).join(recipients, recipients.c.message_id == messages.c.id)
                .where(recipients.c.number == query.to))
    else:
        created, ident = messages.c.created_at, messages.c.id
        stmt = select(messages)
    conditions: list[ColumnElement[bool]] = []
    if query.status is not None:
        conditions.append(messages.c.status == query.status)
    if query.template is not None:
        conditions.append(messages.c.template == query.template)
    if query.caller is not None:
        conditions.append(messages.c.caller == query.caller)
    if query.since is not None:
        conditions.append(created >= to_us(query.since))
    if query.until is not None:
        conditions.append(created < to_us(query.until))
    if query.cursor is not None:
        after_created, after_id = decode_cursor(query.cursor)
        conditions.append(or_(created < after_created,
                              and_(created == after_created, ident < after_id)))
    stmt = stmt.where(*conditions).order_by(created.desc(), ident.desc()).limit(query.limit + 1)
    rows = list((conn.execute(stmt)).all())
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    items = _complete(conn, rows)
    last = rows[-1] if more else None
    return Page(tuple(items), encode_cursor(last.created_at, last.id) if last else None)


def check(query: ListQuery) -> None:
    """BadQueryError naming the first filter the store cannot use."""
    if query.status is not None and query.status not in STATUSES:
        raise BadQueryError("status", f"one of {', '.join(sorted(STATUSES))}")
    if not 1 <= query.limit <= MAX_LIMIT:
        raise BadQueryError("limit", f"from 1 to {MAX_LIMIT}")
    if query.since is not None and query.until is not None and query.since > query.until:
        raise BadQueryError("since", "after until")
    if query.cursor is not None:
        decode_cursor(query.cursor)


# A page's attempts and recipients: by primary key, per record, on the driver's cursor (a
# SQLAlchemy round trip per page cost more than the few indexed lookups it saved).
_MID: BindParameter[str] = bindparam("b_mid")
_ATTEMPTS_OF = Prepared(
    select(attempts.c.seq, attempts.c.provider, attempts.c.started_at, attempts.c.finished_at,
           attempts.c.outcome, attempts.c.error, attempts.c.provider_message_id)
    .where(attempts.c.message_id == _MID).order_by(attempts.c.seq), ())
_RECIPIENTS_OF = Prepared(
    select(recipients.c.number, recipients.c.provider_message_id, recipients.c.status,
           recipients.c.code, recipients.c.at)
    .where(recipients.c.message_id == _MID), ())


def _complete(conn: Connection, rows: Sequence[Row[Any]]) -> list[MessageRecord]:
    """Records for ``rows``, with their attempts and recipients."""
    out = []
    for row in rows:
        key = {"b_mid": row.id}
        tried = [StoredAttempt(seq, provider, from_us(started) or 0.0, from_us(finished),
                               outcome, error, one)
                 for seq, provider, started, finished, outcome, error, one
                 in _ATTEMPTS_OF.rows(conn, key)]
        to = [Recipient(number, one, status, code, from_us(at))
              for number, one, status, code, at in _RECIPIENTS_OF.rows(conn, key)]
        out.append(_record(row, tried, to))
    return out


def _record(row: Row[Any], tried: list[StoredAttempt], to: list[Recipient]) -> MessageRecord:
    numbers = tuple(json.loads(row.numbers))
    order = {number: index for index, number in enumerate(numbers)}
    return MessageRecord(
        id=row.id, caller=row.caller, template=row.template, numbers=numbers,
        params=None if row.params is None else json.loads(row.params), mode=row.mode,
        status=row.status, created_at=from_us(row.created_at) or 0.0,
        updated_at=from_us(row.updated_at) or 0.0, final_at=from_us(row.final_at),
        expires_at=from_us(row.expires_at), attempt_count=row.attempts,
        next_attempt_at=from_us(row.next_attempt_at), callback_url=row.callback_url,
        idempotency_key=row.idempotency_key, provider=row.provider,
        provider_message_id=row.provider_message_id, error=row.error,
        attempts=tuple(tried),
        recipients=tuple(sorted(to, key=lambda r: order.get(r.number, len(order)))))
