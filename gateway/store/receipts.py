"""Delivery receipts (SPEC §9): matched to recipients, applied once, parked when early.

A batch of reports is one transaction: every report of it is applied, parked or found to be a
duplicate together, or none is. A recipient's delivery is written only while it has none
(``status IS NULL``): duplicates and late, contradicting reports change nothing final, on any
number of replicas. The messages a batch touches are locked first, in id order, so two
replicas applying the last two receipts of one message cannot both miss the other's: the
second waits, then sees the first's delivery and moves the message on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, or_, select, update

from gateway.store.db import Database
from gateway.store.prepared import Prepared
from gateway.store.schema import messages, recipients, to_us, unmatched_receipts

PARK_FOR = 3600.0  # seconds an unmatched receipt waits for its record (SPEC §9)
PARKED_BATCH = 500  # parked receipts tried per pass
# A receipt moves a message on only once sending is over; before that it waits (is parked).
_RECEIVING = ("sent", "unknown", "delivered", "undelivered")
_MOVABLE = ("sent", "unknown")


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """One provider receipt for one recipient, as read from the provider's push."""

    source: str  # the receipt route it came by: aliyun | huawei
    delivered: bool
    code: str  # the provider's status or error code (DELIVERED, DELIVRD, RTE_ERR...)
    at: float  # when the provider says it was delivered or failed (Unix seconds)
    message_id: str | None = None  # our id, echoed (Aliyun out_id, Huawei extend)
    number: str | None = None  # as the provider writes it (Aliyun: often without +86)
    provider_message_id: str | None = None  # Aliyun biz_id, Huawei smsMsgId

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> DeliveryReport:
        return cls(**json.loads(text))


@dataclass(frozen=True, slots=True)
class ReceiptOutcome:
    """What became of one report: ``applied``, ``duplicate`` (its recipient already had a
    final delivery) or ``parked`` (no record yet, or its sending is not over)."""

    report: DeliveryReport
    outcome: str
    provider: str | None = None  # the configured provider that sent the matched message
    message_id: str | None = None
    seconds: float | None = None  # from the message's creation to a delivery (applied only)


@dataclass(frozen=True, slots=True)
class MovedMessage:
    """A message that receipts moved to ``delivered`` or ``undelivered``."""

    id: str
    status: str
    callback_url: str | None


@dataclass(slots=True)
class Applied:
    """One batch's (or one parked pass's) results."""

    outcomes: list[ReceiptOutcome] = field(default_factory=list)
    moved: list[MovedMessage] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # sources of parked receipts given up
    parked_left: int = 0  # parked receipts still waiting after a pass


def same_number(stored: str, reported: str) -> bool:
    """Whether a provider's spelling names our E.164 number: ``8613800138000``,
    ``+8613800138000``, ``008613800138000`` and the national ``13800138000`` all do."""
    digits = "".join(c for c in reported if c.isascii() and c.isdigit())
    if digits.startswith("00"):
        digits = digits[2:]
    ours = stored.lstrip("+")
    return ours == digits or (len(digits) >= 6 and ours.endswith(digits))


class ReceiptStore:
    """Apply receipts in batches; keep the early ones and try them again."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def apply(self, reports: Sequence[DeliveryReport]) -> Applied:
        """Apply a batch in one transaction; a report with no final record is parked."""
        return await self._db.write(lambda conn: _apply(conn, self._db.now_us(), reports))

    async def retry_parked(self, keep: float = PARK_FOR, batch: int = PARKED_BATCH) -> Applied:
        """One pass over the oldest parked receipts: those whose record is final now are
        applied (and forgotten), those older than ``keep`` seconds dropped."""
        return await self._db.write(
            lambda conn: _retry(conn, self._db.now_us(), to_us(keep), batch))

    async def parked(self) -> int:
        """How many receipts are parked."""
        return await self._db.read(lambda conn: len(conn.execute(
            select(unmatched_receipts.c.id)).all()))


class _Batch:
    """What a batch sees once its messages are locked: their rows and their recipients (read
    after the lock, so another replica's committed deliveries are in), changed as it goes."""

    def __init__(self, conn: Connection, reports: Sequence[DeliveryReport]) -> None:
        ours = {r.message_id for r in reports if r.message_id}
        known = set(conn.scalars(select(messages.c.id).where(messages.c.id.in_(ours)))) \
            if ours else set()
        # the provider's id alone, only for reports whose own id names no message of ours
        pids = {r.provider_message_id for r in reports
                if r.provider_message_id and r.message_id not in known}
        by_pid: dict[str, list[str]] = {}
        if pids:  # the provider's id alone: which messages could it be?
            for row in conn.execute(select(recipients.c.message_id,
                                           recipients.c.provider_message_id)
                                    .where(recipients.c.provider_message_id.in_(pids))):
                by_pid.setdefault(row.provider_message_id, []).append(row.message_id)
        wanted = sorted(known | {m for found in by_pid.values() for m in found})
        self.messages = _lock(conn, wanted)
        self.numbers: dict[str, dict[str, list[Any]]] = {}  # message -> number -> [pid, status]
        self.by_pid: dict[str, list[tuple[str, str]]] = {}  # provider id -> (message, number)
        if self.messages:
            for one in conn.execute(select(recipients.c.message_id, recipients.c.number,
                                           recipients.c.provider_message_id,
                                           recipients.c.status)
                                    .where(recipients.c.message_id.in_(list(self.messages)))):
                self.numbers.setdefault(one.message_id, {})[one.number] = [
                    one.provider_message_id, one.status]
                if one.provider_message_id:
                    self.by_pid.setdefault(one.provider_message_id, []).append(
                        (one.message_id, one.number))

    def match(self, report: DeliveryReport) -> tuple[str, str] | None:
        """(message id, number): our id plus the number or the per-recipient id; else the
        provider's id alone (narrowed by the number when several recipients share it)."""
        number, pid = report.number, report.provider_message_id
        if report.message_id in self.numbers:
            found = _pick(self.numbers[report.message_id], number, pid)
            if found is not None:
                return report.message_id, found
            if not pid:
                return None  # our message, but no such number in it
        if pid:
            hits = self.by_pid.get(pid, [])
            if len(hits) > 1 and number:
                hits = [(m, n) for m, n in hits if same_number(n, number)]
            if len(hits) == 1:
                return hits[0]
        return None


def _pick(numbers: dict[str, list[Any]], number: str | None, pid: str | None) -> str | None:
    if pid:
        by_id = [n for n, (one, _status) in numbers.items() if one == pid]
        if len(by_id) == 1:
            return by_id[0]
    if number:
        plus = "+" + number.lstrip("+")
        if plus in numbers:
            return plus
        hits = [n for n in numbers if same_number(n, number)]
        if len(hits) == 1:
            return hits[0]
    if not number and len(numbers) == 1:
        # our id names a one-number message whose provider id was never stored (its send
        # ended unknown: the provider's answer never came): the report can only be about it
        [(only, (stored, _status))] = numbers.items()
        if stored is None:
            return only
    return None


def _lock(conn: Connection, wanted: Sequence[str]) -> dict[str, Any]:
    """The messages, locked in id order (PostgreSQL; SQLite's one writer needs no lock)."""
    if not wanted:
        return {}
    stmt = (select(messages.c.id, messages.c.status, messages.c.provider, messages.c.created_at,
                   messages.c.callback_url)
            .where(messages.c.id.in_(wanted)).order_by(messages.c.id).with_for_update())
    return {row.id: row for row in conn.execute(stmt)}


_DELIVER = Prepared(
    update(recipients).where(recipients.c.message_id == bindparam("b_mid"),
                             recipients.c.number == bindparam("b_number"),
                             recipients.c.status.is_(None)),
    ("status", "code", "at"))
_MOVE = Prepared(
    update(messages).where(messages.c.id == bindparam("b_mid"),
                           or_(*(messages.c.status == status for status in _MOVABLE))),
    ("status", "updated_at"))


def _apply(conn: Connection, now: int, reports: Sequence[DeliveryReport],
           parked_ids: Sequence[int | None] | None = None) -> Applied:
    """Apply ``reports``; with ``parked_ids`` (a pass), what matches is deleted from the park
    and what does not stays there instead of being parked again."""
    result = Applied()
    batch = _Batch(conn, reports)
    deliveries: list[dict[str, Any]] = []
    parked: list[dict[str, Any]] = []
    touched: set[str] = set()
    done_parked: list[int] = []
    for index, report in enumerate(reports):
        match = batch.match(report)
        row = batch.messages.get(match[0]) if match is not None else None
        if match is None or row is None or row.status not in _RECEIVING:
            if parked_ids is None:
                parked.append({"provider": report.source, "payload": report.to_json(),
                               "received_at": now})
                result.outcomes.append(ReceiptOutcome(report, "parked"))
            continue
        if parked_ids is not None and parked_ids[index] is not None:
            done_parked.append(int(parked_ids[index] or 0))
        message_id, number = match
        recipient = batch.numbers[message_id][number]
        if recipient[1] is not None:  # final already (or earlier in this batch)
            result.outcomes.append(ReceiptOutcome(report, "duplicate", row.provider, message_id))
            continue
        recipient[1] = "delivered" if report.delivered else "undelivered"
        deliveries.append({"b_mid": message_id, "b_number": number, "status": recipient[1],
                           "code": report.code[:64], "at": to_us(report.at)})
        touched.add(message_id)
        seconds = None
        if report.delivered:  # the provider's time, never after we heard of it
            seconds = max(0.0, min(to_us(report.at), now) - row.created_at) / 1_000_000
        result.outcomes.append(ReceiptOutcome(report, "applied", row.provider, message_id,
                                              seconds))
    _DELIVER.many(conn, deliveries)
    if parked:
        conn.execute(insert(unmatched_receipts), parked)
    result.moved = _settle(conn, now, batch, sorted(touched))
    if done_parked:
        conn.execute(delete(unmatched_receipts).where(unmatched_receipts.c.id.in_(done_parked)))
    return result


def _settle(conn: Connection, now: int, batch: _Batch, touched: list[str]) -> list[MovedMessage]:
    """Each touched message's status from its recipients: ``delivered`` when every one is,
    ``undelivered`` when any is not and none is pending (its row is locked: what the batch
    sees is what is stored)."""
    moved = []
    for message_id in touched:
        statuses = [status for _pid, status in batch.numbers[message_id].values()]
        row = batch.messages[message_id]
        if any(s is None for s in statuses) or row.status not in _MOVABLE:
            continue
        status = "delivered" if all(s == "delivered" for s in statuses) else "undelivered"
        moved.append(MovedMessage(message_id, status, row.callback_url))
    _MOVE.many(conn, [{"b_mid": m.id, "status": m.status, "updated_at": now} for m in moved])
    return moved


def _retry(conn: Connection, now: int, keep_us: int, batch: int) -> Applied:
    rows = conn.execute(select(unmatched_receipts)
                        .order_by(unmatched_receipts.c.id).limit(batch)
                        .with_for_update(skip_locked=True)).all()
    expired = [r for r in rows if r.received_at < now - keep_us]
    waiting = [r for r in rows if r.received_at >= now - keep_us]
    if expired:
        conn.execute(delete(unmatched_receipts)
                     .where(unmatched_receipts.c.id.in_([r.id for r in expired])))
    reports: list[DeliveryReport] = []
    ids: list[int | None] = []
    unreadable: list[int] = []
    for row in waiting:
        try:
            reports.append(DeliveryReport.from_json(row.payload))
            ids.append(row.id)
        except (ValueError, TypeError):  # written by another version: nothing to apply
            unreadable.append(row.id)
    if unreadable:
        conn.execute(delete(unmatched_receipts).where(unmatched_receipts.c.id.in_(unreadable)))
    result = _apply(conn, now, reports, ids) if reports else Applied()
    result.dropped = [r.provider for r in expired] + ["unreadable"] * len(unreadable)
    applied = sum(1 for o in result.outcomes if o.outcome != "parked")
    result.parked_left = len(waiting) - len(unreadable) - applied
    return result

