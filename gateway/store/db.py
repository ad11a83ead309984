"""The one door every concern module uses: queued writes, pooled reads, the clock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.store.engine import Engines
from gateway.store.errors import StoreUnavailableError
from gateway.store.schema import to_us
from gateway.store.writer import GroupWriter, Write, reason

T = TypeVar("T")
Clock = Callable[[], float]


class Database:
    """Writes go through the group-commit writer; reads through the reader pool."""

    def __init__(self, engines: Engines, clock: Clock) -> None:
        self.engines = engines
        self.clock = clock
        # Memory mode has one connection: reads and write batches must take turns on it.
        self._lock = asyncio.Lock() if engines.shared else None
        self._writer = GroupWriter(engines.writer, self._lock)

    def start(self) -> None:
        """Start the writer task."""
        self._writer.start()

    async def close(self) -> None:
        """Finish queued writes, then close every connection."""
        await self._writer.close()
        await self.engines.dispose()

    def now_us(self) -> int:
        """The clock, in stored microseconds."""
        return to_us(self.clock())

    async def write(self, write: Write[T]) -> T:
        """Run ``write`` in the next committed batch; its result."""
        return await self._writer.write(write)

    async def read(self, read: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``read`` in one read transaction (one consistent snapshot on SQLite)."""
        turn: contextlib.AbstractAsyncContextManager[Any] = (
            self._lock if self._lock is not None else contextlib.nullcontext())
        try:
            async with turn, self.engines.reader.connect() as conn, conn.begin():
                return await read(conn)
        except (DBAPIError, OSError) as exc:
            raise StoreUnavailableError(f"the store cannot be read: {reason(exc)}") from exc


def insert(conn: AsyncConnection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """The dialect's INSERT, which knows ON CONFLICT (both engines spell it alike)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
