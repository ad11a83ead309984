"""In-memory, bounded stores: send records for ``GET /sms/{id}`` and idempotency keys."""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from gateway.phones import mask


@dataclass(slots=True)
class SendRecord:
    """What happened to one send; numbers are kept masked only."""

    id: str
    template: str
    to: list[str]  # masked
    created_at: float = field(default_factory=time.time)
    status: str = "pending"
    http_status: int = 0
    provider: str | None = None
    provider_message_id: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)  # index in to, masked, code

    @classmethod
    def start(cls, message_id: str, template: str, numbers: list[str]) -> SendRecord:
        return cls(message_id, template, [mask(n) for n in numbers])

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "status": self.status, "template": self.template, "to": self.to,
            "provider": self.provider, "provider_message_id": self.provider_message_id,
            "created_at": self.created_at, "http_status": self.http_status,
            "attempts": self.attempts, "refused": self.refused,
        }


class Records:
    """The last ``capacity`` send records, oldest evicted first."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, SendRecord] = OrderedDict()

    def add(self, record: SendRecord) -> None:
        self._items[record.id] = record
        if len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def get(self, message_id: str) -> SendRecord | None:
        return self._items.get(message_id)

    def recent(self, count: int) -> list[SendRecord]:
        out = []
        for record in reversed(self._items.values()):
            out.append(record)
            if len(out) == count:
                break
        return out

    def __len__(self) -> int:
        return len(self._items)


@dataclass(slots=True)
class _Entry:
    fingerprint: str  # of the request as understood: numbers normalized, params in order
    created: float
    raw: str = ""  # of the body as sent: a repeat is recognised even after a reload
    response: tuple[int, str] | None = None  # status, JSON text: a third of the dict's memory


class IdempotencyConflict(Exception):
    """The key is in use: ``reason`` says whether by another body or by a send in flight."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


CONFLICT = "this Idempotency-Key was used with a different request body"


class IdempotencyStore:
    """``Idempotency-Key`` -> the first answer, for ``ttl`` seconds, at most ``capacity`` keys."""

    def __init__(self, capacity: int = 100_000, ttl: float = 24 * 3600,
                 clock: Any = time.monotonic) -> None:
        self._capacity = capacity
        self._ttl = ttl
        self._clock = clock
        self._items: OrderedDict[str, _Entry] = OrderedDict()

    def lookup(self, key: str, raw: str) -> tuple[int, dict[str, Any]] | None:
        """The answer stored for exactly this body under ``key``, if any.

        IdempotencyConflict while the first is in flight.

        Checked before the body is validated, so a repeat is replayed even when a reload has
        since changed what is valid (a template's params, say).
        """
        entry = self._live(key)
        if entry is None or not raw or entry.raw != raw:
            return None
        return self._answer(entry)

    def begin(self, key: str, fingerprint: str, raw: str = "") -> tuple[int, dict[str, Any]] | None:
        """The stored answer for a repeat, None for a new key (now reserved).

        IdempotencyConflict for another body, or while the first is in flight."""
        now = self._clock()
        for _ in range(len(self._items)):
            oldest_key, oldest = next(iter(self._items.items()))
            if now - oldest.created < self._ttl and len(self._items) < self._capacity:
                break
            if oldest.response is None:  # in flight: forgetting it now would allow a duplicate
                self._items.move_to_end(oldest_key)
                continue
            del self._items[oldest_key]
        entry = self._live(key)
        if entry is None:
            self._items[key] = _Entry(fingerprint, now, raw)
            return None
        if entry.fingerprint != fingerprint:
            raise IdempotencyConflict(CONFLICT)
        return self._answer(entry)

    def _live(self, key: str) -> _Entry | None:
        entry = self._items.get(key)
        if entry is None or self._clock() - entry.created >= self._ttl:
            return None
        return entry

    @staticmethod
    def _answer(entry: _Entry) -> tuple[int, dict[str, Any]]:
        if entry.response is None:
            raise IdempotencyConflict("a request with this Idempotency-Key is still in flight")
        status, text = entry.response
        return status, json.loads(text)

    def finish(self, key: str, status: int, body: dict[str, Any]) -> None:
        """Keep the answer for repeats."""
        entry = self._items.get(key)
        if entry is not None:
            entry.response = (status, json.dumps(body, ensure_ascii=False))

    def __contains__(self, key: str) -> bool:
        return self._live(key) is not None

    def forget(self, key: str) -> None:
        """Free the key: nothing was sent, so a retry with it may send."""
        self._items.pop(key, None)
