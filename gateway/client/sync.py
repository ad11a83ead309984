"""``SmsClient``: the blocking client, on one ``requests.Session``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import requests

from gateway.client.errors import SmsError, TransportError, error_for
from gateway.client.policy import (
    DEFAULT_TIMEOUT,
    Mode,
    Retry,
    SendAnswer,
    list_query,
    send_body,
)


class SmsClient:
    """A blocking client: one ``requests.Session``, a timeout on every call."""

    def __init__(self, base_url: str, api_key: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT, retries: int = 2, max_retry_wait: float = 30.0,
                 session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._retry = Retry(retries, max_retry_wait)
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
             idempotency_key: str | None = None, mode: Mode | None = None,
             ttl: str | float | None = None, callback_url: str | None = None) -> SendAnswer:
        """Send; returns the 200/202 answer (``status``: sent, unknown or queued).

        ``mode="async"`` queues it (202 ``queued``; ``ttl`` such as ``"10m"`` bounds the wait),
        ``mode=None`` leaves it to the template; ``callback_url`` gets the record when it ends.
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = send_body(to, template, params, mode, ttl, callback_url)
        return SendAnswer(self._call("POST", "/sms", json=body, headers=headers,
                                     repeatable=bool(idempotency_key)))

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

    def records(self, *, status: str | None = None, template: str | None = None,
                to: str | None = None, since: str | None = None, until: str | None = None,
                page_size: int | None = None) -> Iterator[dict[str, Any]]:
        """Every matching record, newest first, fetching page after page by ``next_cursor``."""
        cursor: str | None = None
        while True:
            page = self.list(status=status, template=template, to=to, since=since, until=until,
                             limit=page_size, cursor=cursor)
            yield from page.get("items") or ()
            cursor = page.get("next_cursor")
            if not cursor:
                return

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
