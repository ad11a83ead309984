"""Python clients for callers: ``SmsClient`` on requests, ``AsyncSmsClient`` on aiohttp.

Both retry only what the API says is safe to repeat: a refused connection (nothing was sent),
502 (every provider failed and none can have sent it), 503 with ``Retry-After`` (everything is
open), and, when the send carries an ``Idempotency-Key``, a timeout or a dropped connection too
(the repeat is answered from the first result). Everything else raises a typed :class:`SmsError`
(a 429 from the gateway's own limits: :class:`LimitReached`, with ``rule`` and ``retry_after``).
A send returns a :class:`SendAnswer`: ``sent``, ``queued`` (202, async) or ``unknown``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.client.aio import AsyncSmsClient
from gateway.client.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    LimitReached,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    SendFailed,
    SmsError,
    TransportError,
    Unauthorized,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
    error_for,
)
from gateway.client.policy import SendAnswer

if TYPE_CHECKING:
    from gateway.client.sync import SmsClient

__all__ = [
    "AsyncSmsClient", "BadRequest", "Conflict", "Forbidden", "LimitReached", "NotFound",
    "PayloadTooLarge", "RateLimited", "SendAnswer", "SendFailed", "SmsClient", "SmsError",
    "TransportError", "Unauthorized", "Unavailable", "Unprocessable", "UnsupportedMediaType",
    "error_for",
]


def __getattr__(name: str) -> Any:
    # SmsClient needs requests: imported on first use, so the async client works without it.
    if name == "SmsClient":
        from gateway.client.sync import SmsClient

        return SmsClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
