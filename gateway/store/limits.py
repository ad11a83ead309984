"""Limit counts (SPEC §10): exact sliding windows, checked and counted in one write.

A *bucket* is what one rule family counts in (``number|verify_code|+8613800138000``); each
admitted send adds a row to ``limit_hits`` per bucket it falls in, with its time ``at`` and its
place ``seq`` in the bucket (1, 2, 3, ...). Within a bucket ``at`` rises strictly (a hit in the
same microsecond as the last, or on a clock that stepped back, is put one microsecond after it:
never earlier, so a window never admits early). The count in the window (now - w, now] is then

    seq of the bucket's last hit - seq of its first hit after now - w + 1

seeks on the (bucket, at) index (one statement for all of a bucket's windows), whatever the
number of past sends, in or out of the windows. A refusal's Retry-After reads one more row (the
hit whose leaving admits the request).

The check and the insert are one write: SQLite's single writer (``BEGIN IMMEDIATE`` across
processes) runs them with nothing in between; on PostgreSQL every writer of limit rows first
takes one transaction-level advisory lock, so replicas take turns (one lock, not one per bucket:
a batch of the group commit holds its locks until it commits, and two replicas' batches that
took per-bucket locks in different orders would deadlock). The lock is taken once per
transaction (a group-commit batch), not once per check: on PostgreSQL every statement is a round
trip on the writer's one connection, and a batch's statements run one after another.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import (
    BindParameter,
    Connection,
    bindparam,
    delete,
    func,
    literal_column,
    select,
    update,
)

from gateway.store.db import Database
from gateway.store.prepared import Prepared
from gateway.store.schema import limit_hits, limit_refusals, to_us

PG_LOCK = 0x4C_49_4D_49_54  # "LIMIT": any constant the migration lock does not use
BUCKET_MAX = 255  # limit_hits.bucket's length
PRUNE_BATCH = 500
REFUSALS_KEPT = 2 * 3600.0  # seconds: /status counts the last hour

_B: BindParameter[str] = bindparam("b_bucket")
_INSERT = Prepared(limit_hits.insert(), ("bucket", "at", "seq", "message_id"))
_REFUSED = Prepared(limit_refusals.insert(), ("rule", "at", "message_id"))
_LOCK = Prepared(select(func.pg_advisory_xact_lock(PG_LOCK)), ())


def _seek(column: Any, after: str | None = None) -> Any:
    """``column`` of the bucket's last hit, or of its first hit after ``:after``: one index
    seek each."""
    where = [limit_hits.c.bucket == _B]
    if after is not None:
        where.append(limit_hits.c.at > bindparam(after))
    order = limit_hits.c.at if after is not None else limit_hits.c.at.desc()
    # LIMIT 1 written out: no LIMIT/OFFSET parameters to bind on every check
    return select(column).where(*where).order_by(order).limit(literal_column("1")) \
        .scalar_subquery()


@functools.cache
def counting(windows: int) -> Prepared:
    """One statement for a bucket and ``windows`` windows: its last hit's seq and at, and the
    seq of its first hit inside each window (``b_after0``, ...) — one round trip, not 1 + n."""
    return Prepared(select(
        _seek(limit_hits.c.seq), _seek(limit_hits.c.at),
        *(_seek(limit_hits.c.seq, _after(i)) for i in range(windows))), ())


@functools.cache
def _after(index: int) -> str:
    return f"b_after{index}"


class LimitWindow(NamedTuple):
    """One rule on a bucket: at most ``max`` hits in any ``window`` seconds."""

    rule: str
    max: int
    window: float


class LimitCheck(NamedTuple):
    """A bucket a request falls in, how many hits it adds there, and the rules counting it.
    (Tuples, not frozen dataclasses: a send makes one per bucket, on the hot path.)"""

    bucket: str
    adds: int
    windows: tuple[LimitWindow, ...]


class LimitExceeded(NamedTuple):
    """A rule the request would break; ``retry_after``: seconds until its window admits the
    request, None when it never will (``max`` 0, or more recipients than ``max`` at once)."""

    bucket: str
    rule: str
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class LimitVerdict:
    """Admitted (its hits were counted) or refused (nothing was counted)."""

    exceeded: tuple[LimitExceeded, ...] = ()
    hits: tuple[tuple[str, int], ...] = ()  # (bucket, at) counted, for a refund

    @property
    def admitted(self) -> bool:
        return not self.exceeded


@dataclass(frozen=True, slots=True)
class LimitConsumer:
    """One bucket's count in a window (``key``: the bucket without its family)."""

    key: str
    count: int


def fit(bucket: str) -> str:
    """A bucket name the column takes: one too long keeps its start and a digest of the rest."""
    if len(bucket) <= BUCKET_MAX:
        return bucket
    return bucket[:BUCKET_MAX - 65] + "#" + hashlib.sha256(bucket.encode()).hexdigest()


class LimitCounts:
    """Counting, refunding, clearing and reading limit hits."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def admit(self, checks: Sequence[LimitCheck], message_id: str) -> LimitVerdict:
        """Count the request in every bucket if no window would go over its max; otherwise
        count nothing and keep a refusal per broken rule."""
        return await self._db.write(lambda conn: _admit(conn, checks, message_id,
                                                        self._db.now_us()))

    async def refund(self, hits: Sequence[tuple[str, int]]) -> None:
        """Take back hits of a request no provider was ever called for."""
        await self._db.write(lambda conn: _refund(conn, hits))

    async def clear(self, buckets: Sequence[str]) -> int:
        """Forget every hit in ``buckets``; how many were deleted."""
        def work(conn: Connection) -> int:
            _lock(conn)
            return conn.execute(delete(limit_hits).where(
                limit_hits.c.bucket.in_([fit(b) for b in buckets]))).rowcount
        return await self._db.write(work)

    async def top(self, family: str, window: float, count: int = 5) -> list[LimitConsumer]:
        """The buckets of ``family`` with the most hits in the last ``window`` seconds."""
        after = self._db.now_us() - to_us(window)

        def read(conn: Connection) -> list[LimitConsumer]:
            hits = func.count().label("hits")
            where = [func.substr(limit_hits.c.bucket, 1, len(family)) == family,
                     limit_hits.c.at > after]
            if conn.dialect.name == "sqlite":  # byte order: the index finds the family
                where += [limit_hits.c.bucket >= family,
                          limit_hits.c.bucket < family[:-1] + chr(ord(family[-1]) + 1)]
            rows = conn.execute(select(limit_hits.c.bucket, hits).where(*where)
                                .group_by(limit_hits.c.bucket)
                                .order_by(hits.desc(), limit_hits.c.bucket).limit(count))
            return [LimitConsumer(bucket[len(family):], n) for bucket, n in rows]

        return await self._db.read(read)

    async def refusals(self, since: float) -> dict[str, int]:
        """Refusals by rule in the last ``since`` seconds."""
        after = self._db.now_us() - to_us(since)

        def read(conn: Connection) -> dict[str, int]:
            n = func.count()
            rows = conn.execute(select(limit_refusals.c.rule, n)
                                .where(limit_refusals.c.at > after)
                                .group_by(limit_refusals.c.rule))
            return {rule: count for rule, count in rows}

        return await self._db.read(read)

    async def prune(self, horizon: float, batch: int = PRUNE_BATCH) -> int:
        """Delete hits older than ``horizon`` seconds (no window reads them again) and
        refusals older than two hours, ``batch`` per transaction; hits deleted."""
        now = self._db.now_us()
        cutoff = now - to_us(horizon)
        await self._db.write(lambda conn: conn.execute(delete(limit_refusals).where(
            limit_refusals.c.at < now - to_us(REFUSALS_KEPT))))
        total = 0
        while True:
            deleted, more = await self._db.write(lambda conn: _prune(conn, cutoff, batch))
            total += deleted
            if not more:
                return total


def _lock(conn: Connection) -> None:
    """PostgreSQL: the limits' advisory lock, once per transaction (and per savepoint: one
    rolled back may have let it go)."""
    if conn.dialect.name != "postgresql":
        return
    held = (conn.get_transaction(), conn.get_nested_transaction())
    if conn.info.get("limits_lock") != held:
        _LOCK.execute(conn, {})
        conn.info["limits_lock"] = held


def _admit(conn: Connection, checks: Sequence[LimitCheck], message_id: str,
           now: int) -> LimitVerdict:
    _lock(conn)
    exceeded: list[LimitExceeded] = []
    lasts: list[tuple[str, int, int]] = []  # (bucket, last seq, last at) of each check
    for check in checks:
        bucket = check.bucket if len(check.bucket) <= BUCKET_MAX else fit(check.bucket)
        params: dict[str, Any] = {"b_bucket": bucket}
        for index, limit in enumerate(check.windows):
            params[_after(index)] = now - to_us(limit.window)
        row = counting(len(check.windows)).row(conn, params)
        assert row is not None  # a SELECT without FROM has its one row
        last_seq, last_at, *firsts = row
        if last_seq is None:
            lasts.append((bucket, 0, now - 1))
            used = [0] * len(firsts)
        else:
            lasts.append((bucket, last_seq, last_at))
            used = [0 if first is None else last_seq - first + 1 for first in firsts]
        for limit, count in zip(check.windows, used, strict=True):
            if count + check.adds > limit.max:
                exceeded.append(LimitExceeded(check.bucket, limit.rule, _retry_after(
                    conn, bucket, limit, count, check.adds, now)))
    if exceeded:
        _REFUSED.many(conn, [{"rule": e.rule[:128], "at": now, "message_id": message_id}
                             for e in exceeded])
        return LimitVerdict(tuple(exceeded))
    hits: list[tuple[str, int]] = []
    rows = []
    for check, (bucket, seq, last_at) in zip(checks, lasts, strict=True):
        at = max(now, last_at + 1)
        for i in range(check.adds):
            hits.append((bucket, at + i))
            rows.append({"bucket": bucket, "at": at + i, "seq": seq + 1 + i,
                         "message_id": message_id})
    _INSERT.many(conn, rows)
    return LimitVerdict(hits=tuple(hits))


def _retry_after(conn: Connection, bucket: str, limit: LimitWindow, used: int, adds: int,
                 now: int) -> float | None:
    """Seconds until enough of the window's hits have left it for ``adds`` more."""
    if adds > limit.max:
        return None
    span = to_us(limit.window)
    leaving = used + adds - limit.max  # this many oldest hits must leave first
    at = conn.execute(select(limit_hits.c.at).where(
        limit_hits.c.bucket == bucket, limit_hits.c.at > now - span)
        .order_by(limit_hits.c.at).limit(1).offset(leaving - 1)).scalar()
    return None if at is None else max(0.0, (at + span - now) / 1_000_000)


def _refund(conn: Connection, hits: Sequence[tuple[str, int]]) -> None:
    _lock(conn)
    for bucket, at in sorted(hits, key=lambda hit: -hit[1]):
        gone = conn.execute(delete(limit_hits).where(
            limit_hits.c.bucket == bucket, limit_hits.c.at == at)).rowcount
        if gone:  # the later hits of the bucket move up one place
            conn.execute(update(limit_hits).where(
                limit_hits.c.bucket == bucket, limit_hits.c.at > at)
                .values(seq=limit_hits.c.seq - 1))


def _prune(conn: Connection, cutoff: int, batch: int) -> tuple[int, bool]:
    """The oldest ``batch`` hits by id (ids rise with time) that are not after ``cutoff``; whether
    the whole batch was (then more may follow)."""
    rows = conn.execute(select(limit_hits.c.id, limit_hits.c.at)
                        .order_by(limit_hits.c.id).limit(batch)).all()
    old = [row_id for row_id, at in rows if at <= cutoff]  # (now - w, now] is the window
    if old:
        conn.execute(delete(limit_hits).where(limit_hits.c.id.in_(old)))
    return len(old), len(rows) == batch and len(old) == batch
