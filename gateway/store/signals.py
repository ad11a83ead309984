"""Wake-ups between replicas: ``notify(channel)`` here, ``listen(channel, callback)`` there.

On PostgreSQL a NOTIFY is sent in the group commit's next transaction (so it is delivered only
if that commits) and one connection of its own LISTENs, reconnecting with backoff when the
server goes away; after a reconnect every callback is called once, since notifications sent
meanwhile were lost. A notification is a hint, never the data: whoever listens must also read
the store now and then (procrastinate's rule: LISTEN/NOTIFY wake-ups, polling as the fallback).
On SQLite (and ``memory``) there is no server to relay them: callbacks in this process are
called directly, and other processes on the host rely on their periodic reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, text

from gateway.store.db import Database
from gateway.store.engine import CONNECT_TIMEOUT
from gateway.store.health import FIRST_RETRY, MAX_RETRY
from gateway.store.urls import StoreURL

log = logging.getLogger("gateway.store")

Callback = Callable[[str], None]  # the payload ("" after a reconnect: anything may have changed)
_CHANNEL = re.compile(r"[a-z_][a-z0-9_]{0,62}")
KEEPALIVE = 5.0  # seconds between checks that the listening connection is still there


def _check(channel: str) -> str:
    if not _CHANNEL.fullmatch(channel):
        raise ValueError(f"channel {channel!r}: lowercase letters, digits and _ only")
    return channel


def notify_in(conn: Connection, channel: str, payload: str = "") -> None:
    """Inside a write: NOTIFY ``channel`` when this transaction commits (PostgreSQL only)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_notify(:channel, :payload)"),
                     {"channel": _check(channel), "payload": payload})


class Signals:
    """NOTIFY/LISTEN on PostgreSQL; in-process callbacks elsewhere."""

    def __init__(self, target: StoreURL, db: Database) -> None:
        self._target = target
        self._db = db
        self._callbacks: dict[str, list[Callback]] = {}
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None  # the asyncpg connection that LISTENs
        self.connected = asyncio.Event()  # tests wait on it before they notify

    @property
    def relayed(self) -> bool:
        """Whether notifications reach other processes (PostgreSQL)."""
        return self._target.kind == "postgresql"

    async def notify(self, channel: str, payload: str = "") -> None:
        """Tell every listener of ``channel`` (on every replica) that something changed."""
        _check(channel)
        if self.relayed:
            await self._db.write(lambda conn: notify_in(conn, channel, payload))
        else:
            self._deliver(channel, payload)

    def listen(self, channel: str, callback: Callback) -> None:
        """Call ``callback(payload)`` on every notification of ``channel``."""
        self._callbacks.setdefault(_check(channel), []).append(callback)
        if not self.relayed:
            self.connected.set()
            return
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listening(),
                                                                name="store-listen")
        elif self._conn is not None:
            asyncio.get_running_loop().create_task(self._add(self._conn, channel))

    def _deliver(self, channel: str, payload: str) -> None:
        for callback in list(self._callbacks.get(channel, ())):
            try:
                callback(payload)
            except Exception:  # one listener's trouble is not the others'
                log.exception("a listener of %s failed", channel)

    async def _add(self, conn: Any, channel: str) -> None:
        await conn.add_listener(channel, self._on_notification)

    def _on_notification(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        self._deliver(channel, payload)

    async def _listening(self) -> None:
        import asyncpg  # type: ignore[import-untyped]  # only a PostgreSQL store gets here

        dsn = self._target.url.set(drivername="postgresql").render_as_string(
            hide_password=False)
        delay, first = FIRST_RETRY, True
        while True:
            try:
                conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.sleep(delay)  # the store's health logs the outage, not this
                delay = min(delay * 2, MAX_RETRY)
                continue
            delay = FIRST_RETRY
            try:
                for channel in list(self._callbacks):
                    await self._add(conn, channel)
                self._conn = conn
                self.connected.set()
                if not first:  # what was sent while we were away is lost: look again
                    for channel in list(self._callbacks):
                        self._deliver(channel, "")
                first = False
                while not conn.is_closed():
                    await asyncio.sleep(KEEPALIVE)
                    await conn.fetchval("SELECT 1", timeout=CONNECT_TIMEOUT)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                pass
            finally:
                self._conn = None
                self.connected.clear()
                with contextlib.suppress(Exception):
                    conn.terminate()

    async def close(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
