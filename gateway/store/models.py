"""The store's vocabulary: what goes in, what comes out (plain frozen dataclasses)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["sync", "async"]
# Sending is over at these; only receipts move a message on (sent -> delivered | undelivered).
FINAL = frozenset({"sent", "failed", "rejected", "unknown", "expired", "rate_limited"})
STATUSES = FINAL | {"queued", "sending", "delivered", "undelivered"}
MAX_LIMIT = 500


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message as accepted, written before any provider is called."""

    id: str
    caller: str  # the key's name or a hash of it: never the key
    template: str
    numbers: Sequence[str]  # E.164, in the caller's order
    params: Mapping[str, str] | None = None
    mode: Mode = "sync"
    expires_at: float | None = None  # async: expired if not sent by then
    callback_url: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """How attempt ``seq`` ended: written with the next step (next attempt or final status)."""

    seq: int
    outcome: str
    error: str | None = None
    provider_message_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredAttempt:
    """One provider call: started before the call, finished after (unfinished: maybe sent)."""

    seq: int
    provider: str
    started_at: float
    finished_at: float | None
    outcome: str | None
    error: str | None
    provider_message_id: str | None


@dataclass(frozen=True, slots=True)
class Recipient:
    """One number of a message and, once a receipt came, its delivery."""

    number: str
    provider_message_id: str | None
    status: str | None
    code: str | None
    at: float | None


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A stored message with its attempts and recipients; numbers unmasked (mask when showing)."""

    id: str
    caller: str
    template: str
    numbers: tuple[str, ...]
    params: dict[str, Any] | None
    mode: str
    status: str
    created_at: float
    updated_at: float
    final_at: float | None
    expires_at: float | None
    attempt_count: int
    next_attempt_at: float | None
    callback_url: str | None
    idempotency_key: str | None
    provider: str | None
    provider_message_id: str | None
    error: str | None
    attempts: tuple[StoredAttempt, ...] = ()
    recipients: tuple[Recipient, ...] = ()


@dataclass(frozen=True, slots=True)
class ListQuery:
    """Filters for a page of messages, newest first; ``cursor`` from the previous page."""

    status: str | None = None
    template: str | None = None
    to: str | None = None  # one E.164 number
    caller: str | None = None  # set by the service unless the key may read all
    since: float | None = None  # created at or after
    until: float | None = None  # created before
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of messages and the cursor for the next (None: this was the last)."""

    items: tuple[MessageRecord, ...]
    next_cursor: str | None = None
