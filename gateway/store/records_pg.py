"""A send's writes on PostgreSQL: one statement each, where SQLite runs two or three.

On PostgreSQL every statement is a round trip, and the group-commit writer runs a batch's
statements one after another: a send's six statements were six round trips through the busy
event loop, and what bounded throughput. Data-modifying CTEs do the same work in one statement
per write: the record with its numbers and first attempt; the next attempt (with how the last
one ended); the final status with the last attempt's end and each number's provider id or
refusal. Same rows, same checks as records.py's SQLite path (the store tests run both engines);
a number list travels as one array parameter however many numbers there are. CREATE and
FINISH_SURE also go as a batch's one pipelined statement for all its sends (writer.Bulk).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import BigInteger, Boolean, Connection, Integer, String, TextClause, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY

from gateway.store.errors import UnknownMessageError
from gateway.store.models import AttemptEnd
from gateway.store.prepared import Prepared

_TEXTS = ARRAY(String)


def _typed(sql: str, **types: Any) -> TextClause:
    """``sql`` with its parameters typed (asyncpg is told each one's type by a cast)."""
    return text(sql).bindparams(*(bindparam(name, type_=kind) for name, kind in types.items()))


CREATE = Prepared(_typed(
    """WITH message AS (
        INSERT INTO messages (id, caller, template, numbers, params, mode, status, created_at,
                              updated_at, expires_at, next_attempt_at, callback_url,
                              idempotency_key, attempts)
        VALUES (:id, :caller, :template, :numbers, :params, :mode, :status, :now, :now,
                :expires_at, :next_attempt_at, :callback_url, :idempotency_key, :attempts)),
    numbers AS (
        INSERT INTO recipients (message_id, number, created_at)
        SELECT :id, number, :now FROM unnest(:each) AS number)
    INSERT INTO attempts (message_id, seq, provider, started_at)
    SELECT :id, 1, :provider, :now WHERE :provider IS NOT NULL""",
    id=String, caller=String, template=String, numbers=String, params=String, mode=String,
    status=String, now=BigInteger, expires_at=BigInteger, next_attempt_at=BigInteger,
    callback_url=String, idempotency_key=String, attempts=Integer, each=_TEXTS,
    provider=String), ())

# How an attempt ended, as a CTE the statements below share (it matches no row when seq is NULL).
_ENDED = """ended AS (
        UPDATE attempts SET finished_at = :now, outcome = :outcome, error = :attempt_error,
                            provider_message_id = :attempt_id
        WHERE message_id = :id AND seq = :seq RETURNING 1)"""
_ENDED_TYPES = {"now": BigInteger, "outcome": String, "attempt_error": String,
                "attempt_id": String, "id": String, "seq": Integer}

_START = Prepared(_typed(
    f"""WITH {_ENDED},
    counted AS (
        UPDATE messages SET attempts = attempts + 1, status = 'sending', updated_at = :now
        WHERE id = :id RETURNING attempts)
    INSERT INTO attempts (message_id, seq, provider, started_at)
    SELECT :id, attempts, :provider, :now FROM counted
    RETURNING seq, (SELECT count(*) FROM ended)""",
    provider=String, **_ENDED_TYPES), ())

# Each number's provider id and refusal from parallel arrays (a number appears once: two
# updates of one row in one statement are not allowed).
_NUMBERS = """numbers AS (
        UPDATE recipients AS r
        SET provider_message_id = coalesce(v.provider_id, r.provider_message_id),
            status = coalesce(v.status, r.status), code = coalesce(v.code, r.code),
            at = CASE WHEN v.status IS NULL THEN r.at ELSE :now END
        FROM unnest(:numbers, :provider_ids, :statuses, :codes)
             AS v(number, provider_id, status, code)
        WHERE r.message_id = :id AND r.number = v.number)"""
_NUMBERS_TYPES = {"numbers": _TEXTS, "provider_ids": _TEXTS, "statuses": _TEXTS, "codes": _TEXTS}

_FINISHING = f"""WITH {_ENDED}, {_NUMBERS},
    finished AS (
        UPDATE messages SET status = :status, final_at = :now, updated_at = :now,
            provider = :provider, provider_message_id = :provider_message_id, error = :error,
            lease_until = NULL, lease_owner = NULL, next_attempt_at = NULL,
            params = CASE WHEN :keep_params THEN params END
        WHERE id = :id AND final_at IS NULL RETURNING 1)"""
_FINISHING_TYPES = {"status": String, "provider": String, "provider_message_id": String,
                    "error": String, "keep_params": Boolean, **_ENDED_TYPES, **_NUMBERS_TYPES}
_FINISH = Prepared(_typed(
    _FINISHING + """
    SELECT (SELECT count(*) FROM ended), (SELECT count(*) FROM finished),
           EXISTS (SELECT 1 FROM messages WHERE id = :id)""", **_FINISHING_TYPES), ())
# The same, as one of many (writer.Bulk): fails (division by zero) unless the message was
# there and not final and the last attempt, when named, was found; then finish() says which.
FINISH_SURE = Prepared(_typed(
    _FINISHING + """
    SELECT 1 / ((SELECT count(*) FROM finished)
                * CASE WHEN :seq IS NULL THEN 1 ELSE (SELECT count(*) FROM ended) END)::int""",
    **_FINISHING_TYPES), ())

_ENDED_ONLY = Prepared(_typed(
    f"""WITH {_ENDED}, {_NUMBERS}
    SELECT count(*) FROM ended""",
    **_ENDED_TYPES, **_NUMBERS_TYPES), ())


def create_params(now: int, values: Mapping[str, Any], numbers: Sequence[str],
                  provider: str | None) -> dict[str, Any]:
    """CREATE's parameters: the message row (``values``: its columns but the two times,
    both ``now``), one row per number, and with ``provider`` attempt 1."""
    return {**values, "now": now, "each": list(numbers), "provider": provider}


def start(conn: Connection, now: int, message_id: str, provider: str,
          previous: AttemptEnd | None) -> int:
    """The next attempt's sequence number, its row written (and how ``previous`` ended)."""
    row = _START.row(conn, {"id": message_id, "now": now, "provider": provider,
                            **_attempt(previous)})
    if row is None:
        raise UnknownMessageError(message_id)
    _check_ended(previous, row[1], message_id)
    return int(row[0])


def end(conn: Connection, now: int, message_id: str, ended: AttemptEnd,
        recipient_ids: Mapping[str, str] | None) -> None:
    """How attempt ``ended.seq`` ended, and each number's provider id."""
    found = _ENDED_ONLY.one(conn, {"id": message_id, "now": now, **_attempt(ended),
                                   **_numbers(None, recipient_ids)})
    _check_ended(ended, found, message_id)


def finish_params(now: int, message_id: str, values: Mapping[str, Any],
                  last: AttemptEnd | None, refused: Mapping[str, str] | None,
                  recipient_ids: Mapping[str, str] | None) -> dict[str, Any]:
    """The parameters of finish() and FINISH_SURE: the final status (``values``: status,
    provider, provider_message_id, error, keep_params), how the ``last`` attempt ended, the
    numbers ``refused`` and each number's provider id."""
    return {"id": message_id, "now": now, **values, **_attempt(last),
            **_numbers(refused, recipient_ids)}


def finish(conn: Connection, params: Mapping[str, Any], last: AttemptEnd | None) -> bool:
    """Set the final status unless one was set; False if it was. UnknownMessageError: no
    such message (or no such ``last`` attempt)."""
    message_id = params["id"]
    row = _FINISH.row(conn, params)
    assert row is not None  # a SELECT of aggregates: always one row
    ended, finished, exists = row
    if not exists:
        raise UnknownMessageError(message_id)
    _check_ended(last, ended, message_id)
    return bool(finished)


def _attempt(ended: AttemptEnd | None) -> dict[str, Any]:
    if ended is None:
        return {"seq": None, "outcome": None, "attempt_error": None, "attempt_id": None}
    return {"seq": ended.seq, "outcome": ended.outcome, "attempt_error": ended.error,
            "attempt_id": ended.provider_message_id}


def _check_ended(ended: AttemptEnd | None, found: int, message_id: str) -> None:
    if ended is not None and not found:
        raise UnknownMessageError(f"{message_id} attempt {ended.seq}")


def _numbers(refused: Mapping[str, str] | None,
             recipient_ids: Mapping[str, str] | None) -> dict[str, list[str | None]]:
    refused, recipient_ids = refused or {}, recipient_ids or {}
    numbers = list(dict.fromkeys([*recipient_ids, *refused]))
    return {"numbers": list(numbers),
            "provider_ids": [recipient_ids.get(n) for n in numbers],
            "statuses": ["refused" if n in refused else None for n in numbers],
            "codes": [refused.get(n) for n in numbers]}
