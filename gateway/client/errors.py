"""The client's exceptions: one per problem status, plus no answer at all."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class SmsError(Exception):
    """A problem answer (RFC 9457) or a transport failure; ``retry_after`` in seconds."""

    status: int | None = None

    def __init__(self, message: str, *, status: int | None = None,
                 problem: Mapping[str, Any] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status if status is not None else type(self).status
        self.problem: dict[str, Any] = dict(problem or {})
        self.retry_after = retry_after

    @property
    def id(self) -> str | None:
        """Our message id, when the gateway got far enough to assign one."""
        value = self.problem.get("id")
        return value if isinstance(value, str) else None


class BadRequest(SmsError):
    status = 400


class Unauthorized(SmsError):
    status = 401


class Forbidden(SmsError):
    status = 403


class NotFound(SmsError):
    status = 404


class Conflict(SmsError):
    status = 409  # an Idempotency-Key reused with another body, or while in flight


class PayloadTooLarge(SmsError):
    status = 413


class UnsupportedMediaType(SmsError):
    status = 415


class Unprocessable(SmsError):
    status = 422  # bad template/params/numbers, or a provider rejected it as the caller's fault


class RateLimited(SmsError):
    status = 429  # a per-recipient limit: wait retry_after before sending to that number again


class LimitReached(RateLimited):
    """429 ``limit-exceeded``: the gateway's own limits refused the send before any provider.

    ``rule`` names the (first) broken rule, ``rules`` every one; ``retry_after`` is when all of
    them would admit the request again, None when it never can (``max: 0``, too many numbers).
    """

    @property
    def rules(self) -> list[str]:
        """The broken rules' names, each once, in the gateway's order."""
        names: list[str] = []
        for item in self.problem.get("errors") or ():
            if isinstance(item, dict) and isinstance(item.get("limit"), str) \
                    and item["limit"] not in names:
                names.append(item["limit"])
        return names

    @property
    def rule(self) -> str | None:
        rules = self.rules
        return rules[0] if rules else None


class SendFailed(SmsError):
    status = 502  # every provider failed; none can have sent it


class Unavailable(SmsError):
    status = 503  # every provider is open or disabled (or the store is down)


class TransportError(SmsError):
    """No answer: ``maybe_sent`` is False only when the request cannot have arrived."""

    def __init__(self, message: str, *, maybe_sent: bool) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


_ERRORS: dict[int, type[SmsError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    413: PayloadTooLarge, 415: UnsupportedMediaType, 422: Unprocessable, 429: RateLimited,
    502: SendFailed, 503: Unavailable,
}


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        value = float(headers.get("Retry-After", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def error_for(status: int, body: Any, headers: Mapping[str, str]) -> SmsError:
    """The typed exception for a non-2xx answer."""
    problem = body if isinstance(body, dict) else {}
    detail = problem.get("detail") or problem.get("title") or f"HTTP {status}"
    cls = _ERRORS.get(status, SmsError)
    if status == 429 and str(problem.get("type", "")).endswith(":limit-exceeded"):
        cls = LimitReached
    return cls(f"{status}: {detail}", status=status, problem=problem,
               retry_after=_retry_after(headers))
