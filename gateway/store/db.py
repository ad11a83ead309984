"""The one door every concern module uses: queued writes, pooled reads, the clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from gateway.store.engine import Backend, Work
from gateway.store.errors import StoreClosedError, StoreUnavailableError
from gateway.store.health import StoreHealth, is_outage
from gateway.store.schema import to_us
from gateway.store.writer import Bulk, GroupWriter, reason

T = TypeVar("T")
Clock = Callable[[], float]


class Database:
    """Writes go through the group-commit writer; reads straight to the reader pool."""

    def __init__(self, backend: Backend, clock: Clock, shown: str = "the store") -> None:
        self.backend = backend
        self.clock = clock
        # up/down for the whole process: while down, reads and writes fail at once
        self.health = StoreHealth(shown, self.ping)
        self._writer = GroupWriter(backend, health=self.health)
        self._closed = False
        # Every statement a round trip: worth sending a batch's alike statements together
        self.postgresql = backend.write_engine.dialect.name == "postgresql"

    @property
    def write_engine(self) -> Engine:
        """The engine writes go through (tests count its commits)."""
        return self.backend.write_engine

    def start(self) -> None:
        """Start the writer task."""
        self._writer.start()

    async def close(self) -> None:
        """Finish queued writes, then close every connection."""
        self._closed = True
        await self.health.close()
        await self._writer.close()
        await self.backend.dispose()

    def now_us(self) -> int:
        """The clock, in stored microseconds."""
        return to_us(self.clock())

    async def write(self, work: Work[T], bulk: Bulk | None = None) -> T:
        """Run ``work`` in the next committed batch; its result. ``bulk``: the same write as
        one statement, run together with the batch's others of that statement on PostgreSQL
        (see writer.py)."""
        return await self._writer.write(work, bulk)

    async def read(self, work: Work[T]) -> T:
        """Run ``work`` in one read transaction (one consistent snapshot on SQLite)."""
        if self._closed:
            raise StoreClosedError("the store is closed")
        self.health.check()
        try:
            result = await self.backend.read(work)
        except (DBAPIError, OSError) as exc:
            if is_outage(exc):
                self.health.failed(reason(exc))
            raise StoreUnavailableError(f"the store cannot be read: {reason(exc)}") from exc
        if not self.health.up:  # a trial went through: it is back
            self.health.succeeded()
        return result

    async def ping(self) -> None:
        """One round trip to the database, past the health gate (the probe's own check)."""
        await self.backend.read(lambda conn: conn.exec_driver_sql("SELECT 1").scalar())


def insert(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """The dialect's INSERT, which knows ON CONFLICT (both engines spell it alike)."""
    return dialect_insert(conn.dialect.name, table)


def dialect_insert(dialect: str, table: Table) -> postgresql.Insert | sqlite.Insert:
    """The INSERT of the dialect named ``dialect``."""
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
