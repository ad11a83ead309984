"""What both clients share: request bodies, queries and the retry policy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from gateway.client.errors import SendFailed, SmsError, TransportError, Unavailable

Mode = Literal["sync", "async"]
DEFAULT_TIMEOUT = 30.0  # above the gateway's own default deadline (15 s)


class Retry:
    """How long to wait before the next attempt, or None to give up (shared by both clients)."""

    def __init__(self, retries: int, max_wait: float) -> None:
        self.retries = retries
        self.max_wait = max_wait

    def delay(self, attempt: int, error: SmsError, repeatable: bool) -> float | None:
        if attempt >= self.retries:
            return None
        if isinstance(error, TransportError):
            safe = not error.maybe_sent or repeatable
            wait: float | None = min(0.5 * 2 ** attempt, self.max_wait) if safe else None
        elif isinstance(error, SendFailed):
            wait = min(error.retry_after or 0.5 * 2 ** attempt, self.max_wait)
        elif isinstance(error, Unavailable):
            wait = error.retry_after  # without it the gateway gave no sign it will recover
        else:
            return None
        return None if wait is None or wait > self.max_wait else wait


class SendAnswer(dict[str, Any]):
    """A 200 or 202 answer to ``POST /sms``: the JSON as a dict, plus what callers test.

    ``status`` is ``sent``, ``queued`` (async: accepted, sent later; follow it with ``get``) or
    ``unknown`` (it may have been sent: never resend blindly).
    """

    @property
    def id(self) -> str:
        return str(self.get("id", ""))

    @property
    def status(self) -> str:
        return str(self.get("status", ""))

    @property
    def sent(self) -> bool:
        return self.status == "sent"

    @property
    def queued(self) -> bool:
        return self.status == "queued"

    @property
    def maybe_sent(self) -> bool:
        """True for ``unknown``: the provider may have it."""
        return self.status == "unknown"


def send_body(to: str | list[str], template: str, params: Mapping[str, Any] | None,
              mode: Mode | None, ttl: str | float | None = None,
              callback_url: str | None = None) -> dict[str, Any]:
    """The ``POST /sms`` body; ``mode`` (None: the template's, else sync), ``ttl`` and
    ``callback_url`` are left out when not given."""
    body: dict[str, Any] = {"to": to, "template": template, "params": dict(params or {})}
    if mode is not None:
        body["mode"] = mode
    if ttl is not None:
        body["ttl"] = ttl
    if callback_url is not None:
        body["callback_url"] = callback_url
    return body


def list_query(**filters: Any) -> dict[str, str]:
    """``GET /sms`` filters without the unset ones."""
    return {key: str(value) for key, value in filters.items() if value is not None}
