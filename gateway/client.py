"""Python clients for callers: ``SmsClient`` on requests, ``AsyncSmsClient`` on aiohttp.

Both retry only what the API says is safe to repeat: a refused connection (nothing was sent),
502 (every provider failed and none can have sent it), 503 with ``Retry-After`` (everything is
open), and, when the send carries an ``Idempotency-Key``, a timeout or a dropped connection too
(the repeat is answered from the first result). Everything else raises a typed :class:`SmsError`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import requests

__all__ = [
    "AsyncSmsClient", "BadRequest", "Conflict", "Forbidden", "NotFound", "PayloadTooLarge",
    "RateLimited", "SendFailed", "SmsClient", "SmsError", "TransportError", "Unauthorized",
    "Unavailable", "Unprocessable", "UnsupportedMediaType",
]

Mode = Literal["sync", "async"]
DEFAULT_TIMEOUT = 30.0  # above the gateway's own default deadline (15 s)


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
    return cls(f"{status}: {detail}", status=status, problem=problem,
               retry_after=_retry_after(headers))


class _Retry:
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


def send_body(to: str | list[str], template: str, params: Mapping[str, Any] | None,
              mode: Mode) -> dict[str, Any]:
    """The ``POST /sms`` body; ``mode`` is left out when sync, the server's default."""
    body: dict[str, Any] = {"to": to, "template": template, "params": dict(params or {})}
    if mode != "sync":
        body["mode"] = mode
    return body


def list_query(**filters: Any) -> dict[str, str]:
    """``GET /sms`` filters without the unset ones."""
    return {key: str(value) for key, value in filters.items() if value is not None}


class SmsClient:
    """A blocking client: one ``requests.Session``, a timeout on every call."""

    def __init__(self, base_url: str, api_key: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT, retries: int = 2, max_retry_wait: float = 30.0,
                 session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._retry = _Retry(retries, max_retry_wait)
        self._sleep = sleep
        self._session = session or requests.Session()
        self._session.headers["Accept"] = "application/json, application/problem+json"
        if api_key:
            self._session.headers["Authorization"] = f"Bearer {api_key}"

    def __enter__(self) -> SmsClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    def send(self, to: str | list[str], template: str, params: Mapping[str, Any] | None = None,
             idempotency_key: str | None = None, mode: Mode = "sync") -> dict[str, Any]:
        """Send; returns the 200/202 answer (``status``: sent, unknown or queued)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/sms", json=send_body(to, template, params, mode),
                          headers=headers, repeatable=bool(idempotency_key))

    def get(self, message_id: str) -> dict[str, Any]:
        """One send record."""
        return self._call("GET", f"/sms/{quote(message_id, safe='')}", repeatable=True)

    def list(self, *, status: str | None = None, template: str | None = None,
             to: str | None = None, since: str | None = None, until: str | None = None,
             limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        """One page of records, newest first: ``{"items": [...], "next_cursor": ...}``."""
        query = list_query(status=status, template=template, to=to, since=since, until=until,
                           limit=limit, cursor=cursor)
        return self._call("GET", "/sms", params=query, repeatable=True)

    def status(self) -> dict[str, Any]:
        """``GET /status``: providers, breakers, config."""
        return self._call("GET", "/status", repeatable=True)

    def _call(self, method: str, path: str, *, repeatable: bool, **kwargs: Any) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                return self._once(method, path, **kwargs)
            except SmsError as error:
                wait = self._retry.delay(attempt, error, repeatable)
                if wait is None:
                    raise
            self._sleep(wait)
            attempt += 1

    def _once(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._session.request(method, self.base_url + path,
                                             timeout=self.timeout, **kwargs)
        except requests.ConnectionError as exc:
            # ConnectTimeout is both; a refused or timed-out connect cannot have sent anything.
            connect = isinstance(exc, requests.ConnectTimeout) or _refused(exc)
            raise TransportError(f"{method} {path}: {type(exc).__name__}",
                                 maybe_sent=not connect) from exc
        except requests.Timeout as exc:
            raise TransportError(f"{method} {path}: timeout", maybe_sent=True) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 300:
            raise error_for(response.status_code, body, response.headers)
        return body if isinstance(body, dict) else {}


def _refused(exc: requests.ConnectionError) -> bool:
    text = repr(exc.args[0]) if exc.args else ""
    return "NewConnectionError" in text or "ConnectionRefused" in text


class AsyncSmsClient:
    """The asyncio twin: the same methods, awaited; one ``aiohttp.ClientSession``."""

    def __init__(self, base_url: str, api_key: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT, retries: int = 2, max_retry_wait: float = 30.0,
                 session: aiohttp.ClientSession | None = None,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._retry = _Retry(retries, max_retry_wait)
        self._sleep = sleep
        self._session = session
        self._owned = session is None
        self._headers = {"Accept": "application/json, application/problem+json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    async def __aenter__(self) -> AsyncSmsClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owned:
            await self._session.close()

    async def send(self, to: str | list[str], template: str,
                   params: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
                   mode: Mode = "sync") -> dict[str, Any]:
        """Send; returns the 200/202 answer (``status``: sent, unknown or queued)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return await self._call("POST", "/sms", json=send_body(to, template, params, mode),
                                headers=headers, repeatable=bool(idempotency_key))

    async def get(self, message_id: str) -> dict[str, Any]:
        """One send record."""
        return await self._call("GET", f"/sms/{quote(message_id, safe='')}", repeatable=True)

    async def list(self, *, status: str | None = None, template: str | None = None,
                   to: str | None = None, since: str | None = None, until: str | None = None,
                   limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        """One page of records, newest first: ``{"items": [...], "next_cursor": ...}``."""
        query = list_query(status=status, template=template, to=to, since=since, until=until,
                           limit=limit, cursor=cursor)
        return await self._call("GET", "/sms", params=query, repeatable=True)

    async def status(self) -> dict[str, Any]:
        """``GET /status``: providers, breakers, config."""
        return await self._call("GET", "/status", repeatable=True)

    async def _call(self, method: str, path: str, *, repeatable: bool,
                    **kwargs: Any) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                return await self._once(method, path, **kwargs)
            except SmsError as error:
                wait = self._retry.delay(attempt, error, repeatable)
                if wait is None:
                    raise
            await self._sleep(wait)
            attempt += 1

    async def _once(self, method: str, path: str, *, headers: Mapping[str, str] | None = None,
                    **kwargs: Any) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.request(
                    method, self.base_url + path, headers={**self._headers, **(headers or {})},
                    timeout=aiohttp.ClientTimeout(total=self.timeout), **kwargs) as response:
                body = await response.json(content_type=None) if await response.read() else None
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise TransportError(f"{method} {path}: {type(exc).__name__}",
                                 maybe_sent=False) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransportError(f"{method} {path}: {type(exc).__name__}", maybe_sent=True) \
                from exc
        except ValueError:
            body = None  # not JSON: typed by the status alone
        if response.status >= 300:
            raise error_for(response.status, body, response.headers)
        return body if isinstance(body, dict) else {}
