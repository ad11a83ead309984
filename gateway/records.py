"""Records as the API shows them (numbers masked), and ``GET /sms`` filters read from a query.

No SQL here: the store (:mod:`gateway.store`) reads and writes; this module only translates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gateway.phones import mask as mask_number
from gateway.phones import normalize
from gateway.problems import problem_body
from gateway.store import BadQueryError, ListQuery, MessageRecord
from gateway.store.models import MAX_LIMIT

FILTERS = ("status", "template", "to", "since", "until", "limit", "cursor")
# The answer a final status stands for (a failed send: 502 if a provider was called, else 503).
# A receipt moves only a sent message: delivered and undelivered stand for its 200.
_HTTP = {"sent": 200, "delivered": 200, "undelivered": 200, "unknown": 202, "rejected": 422,
         "rate_limited": 429}
_DELIVERED = ("delivered", "undelivered")


def view(record: MessageRecord, *, numbers: bool = False) -> dict[str, Any]:
    """``GET /sms/{id}``'s body (and one item of ``GET /sms``, and a dashboard row); numbers
    masked unless ``numbers`` (the reader's key has ``read_numbers``)."""
    mask = _shown if numbers else mask_number
    position: dict[str, int] = {}  # each number's first index: no list scan per refusal
    for i, number in enumerate(record.numbers):
        position.setdefault(number, i)
    refused = [{"index": position.get(r.number, -1), "to": mask(r.number), "error": r.code}
               for r in record.recipients if r.status == "refused"]
    attempts = [{"provider": a.provider, "outcome": a.outcome or "in_flight", "error": a.error,
                 "duration_ms": None if a.finished_at is None
                 else round((a.finished_at - a.started_at) * 1000, 1),
                 "started_at": a.started_at, "finished_at": a.finished_at}
                for a in record.attempts]
    http = _HTTP.get(record.status, 0)
    if record.status == "failed":
        http = 502 if any(a["outcome"] == "failed" for a in attempts) else 503
    return {
        "id": record.id, "status": record.status, "template": record.template,
        "to": [mask(n) for n in record.numbers], "mode": record.mode,
        "created_at": record.created_at, "updated_at": record.updated_at,
        "final_at": record.final_at, "http_status": http, "provider": record.provider,
        "provider_message_id": record.provider_message_id, "error": record.error,
        "attempts": attempts, "refused": refused,
        # per recipient, once a receipt said (SPEC §9); refused numbers have none
        "deliveries": [{"to": mask(r.number), "status": r.status, "code": r.code, "at": r.at}
                       for r in record.recipients if r.status in _DELIVERED],
        **({"params": record.params} if record.params is not None else {}),
        # async (SPEC §8): when it expires, and when the outbox tries it next while queued
        **({"expires_at": record.expires_at, "next_attempt_at": record.next_attempt_at}
           if record.mode == "async" else {}),
    }


def _shown(number: str) -> str:
    return number


def list_query(query: Mapping[str, str], region: str, caller: str | None) -> ListQuery:
    """The filters of ``GET /sms``; BadQueryError naming the first field that is wrong."""
    for name in query:
        if name not in FILTERS:
            raise BadQueryError(name, f"unknown filter; use {', '.join(FILTERS)}")
    to = query.get("to")
    if to is not None:
        try:
            to = normalize(to, region).e164
        except ValueError as exc:
            raise BadQueryError("to", str(exc)) from None
    limit = query.get("limit", "50")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
        raise BadQueryError("limit", f"a whole number from 1 to {MAX_LIMIT}")
    return ListQuery(status=query.get("status"), template=query.get("template"), to=to,
                     caller=caller, since=_time(query, "since"), until=_time(query, "until"),
                     limit=int(limit), cursor=query.get("cursor"))


def _time(query: Mapping[str, str], name: str) -> float | None:
    """RFC 3339 with an offset (``2026-12-03T05:00:00Z``) or Unix seconds."""
    text = query.get(name)
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise BadQueryError(name, "RFC 3339 with an offset, or Unix seconds") from None
        seconds = parsed.timestamp()
    if not math.isfinite(seconds) or not 0 <= seconds < 1e11:
        raise BadQueryError(name, "out of range")
    return seconds


_SLUGS = {422: "rejected-by-provider", 429: "recipient-rate-limited", 502: "all-providers-failed",
          503: "no-provider-available"}


def answer(record: MessageRecord) -> tuple[int, dict[str, Any]]:
    """The ``POST /sms`` answer a final record stands for (the caller's own numbers, in E.164):
    given for an Idempotency-Key whose request a crash cut short before its answer was kept."""
    shown = view(record, numbers=True)
    status = shown["http_status"] or 202  # not final (an async message queued or sending)
    attempts = [{"provider": a["provider"], "outcome": a["outcome"], "error": a["error"],
                 "duration_ms": a["duration_ms"] or 0.0} for a in shown["attempts"]]
    if status in (200, 202):
        return status, {
            "id": record.id, "status": record.status, "provider": record.provider,
            "provider_message_id": record.provider_message_id, "to": list(record.numbers),
            "attempts": attempts, "message": "send",
            **({"refused": [{"to": r["to"], "error": r["error"]} for r in shown["refused"]]}
               if shown["refused"] else {})}
    detail = record.error or record.status
    if status == 422:
        detail = f"{record.provider} rejected the message as the caller's fault: {detail}"
    return status, problem_body(status, detail, _SLUGS.get(status), id=record.id,
                                attempts=attempts)
