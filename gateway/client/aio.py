"""``AsyncSmsClient``: the asyncio twin of ``SmsClient``, on one ``aiohttp.ClientSession``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from gateway.client.errors import SmsError, TransportError, error_for
from gateway.client.policy import (
    DEFAULT_TIMEOUT,
    Mode,
    Retry,
    SendAnswer,
    list_query,
    send_body,
)


class AsyncSmsClient:
    """The asyncio twin: the same methods, awaited; one ``aiohttp.ClientSession``."""

    def __init__(self, base_url: str, api_key: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT, retries: int = 2, max_retry_wait: float = 30.0,
                 session: aiohttp.ClientSession | None = None,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._retry = Retry(retries, max_retry_wait)
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
                   mode: Mode | None = None, ttl: str | float | None = None,
                   callback_url: str | None = None) -> SendAnswer:
        """Send; returns the 200/202 answer (``status``: sent, unknown or queued).

        ``mode="async"`` queues it (202 ``queued``; ``ttl`` such as ``"10m"`` bounds the wait),
        ``mode=None`` leaves it to the template; ``callback_url`` gets the record when it ends.
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = send_body(to, template, params, mode, ttl, callback_url)
        return SendAnswer(await self._call("POST", "/sms", json=body, headers=headers,
                                           repeatable=bool(idempotency_key)))

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

    async def records(self, *, status: str | None = None, template: str | None = None,
                      to: str | None = None, since: str | None = None, until: str | None = None,
                      page_size: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every matching record, newest first, fetching page after page by ``next_cursor``."""
        cursor: str | None = None
        while True:
            page = await self.list(status=status, template=template, to=to, since=since,
                                   until=until, limit=page_size, cursor=cursor)
            for item in page.get("items") or ():
                yield item
            cursor = page.get("next_cursor")
            if not cursor:
                return

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
