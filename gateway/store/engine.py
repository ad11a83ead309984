"""Where SQL runs: SQLite in threads of our own, PostgreSQL on the event loop (asyncpg).

Every store operation is a plain function of a SQLAlchemy Core ``Connection``: one code path for
both engines. How it is run differs:

- SQLite: the stdlib driver in a dedicated writer thread (one connection) and a small reader
  pool of threads (``memory``: one connection, used on the event loop itself, no thread hop).
  A whole write batch costs one hop to the writer thread. (Through
  aiosqlite every driver call hops threads: measured 340 µs of CPU per INSERT against 59 µs here.)
  Set-up as PrefectHQ/prefect's: the driver's own transaction handling is off
  (``isolation_level = None``) and we emit ``BEGIN IMMEDIATE``, so a write transaction takes the
  write lock at its start and savepoints work; WAL lets readers read while the writer writes;
  ``synchronous=NORMAL`` in WAL is durable across a process crash, one fsync per checkpoint.
- PostgreSQL: SQLAlchemy's async engine over asyncpg; the function runs through ``run_sync``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from gateway.store.errors import CorruptStoreError, StoreConfigError
from gateway.store.urls import StoreURL

T = TypeVar("T")
Work = Callable[[Connection], T]
BUSY_TIMEOUT_MS = 5000
READERS = 4
# PostgreSQL: a connection attempt gives up after CONNECT_TIMEOUT (asyncpg's default is 60 s: a
# black-holed server would hold every send that long); a statement after STATEMENT_TIMEOUT, on
# the server (statement_timeout) and, should the server not answer at all, in the driver.
CONNECT_TIMEOUT = 5.0
STATEMENT_TIMEOUT = 30.0
PG_CONNECT_ARGS: dict[str, Any] = {
    "timeout": CONNECT_TIMEOUT,
    "command_timeout": STATEMENT_TIMEOUT + 5,
    "server_settings": {"statement_timeout": str(int(STATEMENT_TIMEOUT * 1000)),
                        "application_name": "sms-gateway"},
}
_SQLITE_MAGIC = b"SQLite format 3\x00"


class Backend(Protocol):
    """Runs a function of a Connection in one transaction, for writing or for reading."""

    @property
    def write_engine(self) -> Engine:
        """The (sync) engine writes go through: event hooks attach here."""

    async def write(self, work: Work[T]) -> T:
        """``work`` in one write transaction, committed when it returns."""

    async def read(self, work: Work[T]) -> T:
        """``work`` in one read transaction (one consistent snapshot)."""

    async def dispose(self) -> None:
        """Close every connection and thread."""


def create_backend(target: StoreURL) -> Backend:
    """The backend for ``target``; a SQLite file is checked first (folder, rights, header)."""
    if target.kind == "postgresql":
        # One writer connection (the group commit's), READERS (+2) readers checked before use
        # (pool_pre_ping: one dropped by a failover is replaced, not handed out).
        return AsyncBackend(
            create_async_engine(target.url, pool_size=1, max_overflow=0,
                                connect_args=PG_CONNECT_ARGS),
            create_async_engine(target.url, pool_size=READERS, max_overflow=2,
                                pool_pre_ping=True, connect_args=PG_CONNECT_ARGS))
    if target.kind == "memory":
        # One in-memory database lives as long as its one connection (StaticPool), used on the
        # event loop itself: no file, so nothing can block, and no thread hop to pay for.
        return InlineBackend(_sqlite_engine(target, StaticPool, write=True, wal=False))
    assert target.path is not None
    check_sqlite_path(target.path)
    writer = _sqlite_engine(target, None, write=True, wal=True, pool_size=1, max_overflow=0)
    reader = _sqlite_engine(target, None, write=False, wal=True, pool_size=READERS,
                            max_overflow=0)
    return ThreadBackend(writer, ThreadPoolExecutor(1, thread_name_prefix="store-writer"),
                         reader, ThreadPoolExecutor(READERS, thread_name_prefix="store-reader"))


class ThreadBackend:
    """SQLite: each transaction runs whole in a thread of ours."""

    def __init__(self, writer: Engine, write_pool: ThreadPoolExecutor, reader: Engine,
                 read_pool: ThreadPoolExecutor) -> None:
        self._writer, self._write_pool = writer, write_pool
        self._reader, self._read_pool = reader, read_pool
        self._open = True
        self._held: Connection | None = None  # the writer's connection, kept between batches

    def _write(self, work: Work[T]) -> T:
        # Runs in the writer thread only. Keeping the connection saves a pool check-out and
        # the ROLLBACK the pool issues on every check-in: most of a lone write's cost.
        if self._held is None or self._held.invalidated or self._held.closed:
            self._held = self._writer.connect()
        try:
            with self._held.begin():
                return work(self._held)
        except BaseException:
            self._held.close()
            self._held = None
            raise

    def _release(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None

    @property
    def write_engine(self) -> Engine:
        return self._writer

    async def write(self, work: Work[T]) -> T:
        return await _in_thread(self._write_pool, self._write, work)

    async def read(self, work: Work[T]) -> T:
        if self._read_pool is self._write_pool:  # memory: one connection for both
            return await _in_thread(self._write_pool, self._write, work)
        return await _in_thread(self._read_pool, _transaction, self._reader, work)

    async def dispose(self) -> None:
        if not self._open:
            return
        self._open = False
        await _in_thread(self._write_pool, self._release)
        for pool, engine in {(self._write_pool, self._writer), (self._read_pool, self._reader)}:
            await _in_thread(pool, engine.dispose)
            pool.shutdown(wait=False)


class InlineBackend(ThreadBackend):
    """``memory``: each transaction runs on the event loop, reads and writes on one connection
    (they cannot interleave: a transaction runs whole, without awaiting)."""

    def __init__(self, engine: Engine) -> None:
        one = ThreadPoolExecutor(1, thread_name_prefix="store-memory")  # only for dispose
        super().__init__(engine, one, engine, one)

    async def write(self, work: Work[T]) -> T:
        return self._write(work)

    async def read(self, work: Work[T]) -> T:
        return self._write(work)

    async def dispose(self) -> None:
        if not self._open:
            return
        self._open = False
        self._release()
        self._writer.dispose()
        self._write_pool.shutdown(wait=False)


class AsyncBackend:
    """PostgreSQL: asyncpg on the event loop, the same functions through ``run_sync``."""

    def __init__(self, writer: AsyncEngine, reader: AsyncEngine) -> None:
        self._writer, self._reader = writer, reader
        self._held: AsyncConnection | None = None  # only the writer task uses it, in turn

    @property
    def write_engine(self) -> Engine:
        return self._writer.sync_engine

    async def write(self, work: Work[T]) -> T:
        # The writer keeps its connection between batches (no check-out, no ping, no reset);
        # after any failure it is dropped and the next batch connects afresh.
        if self._held is None or self._held.invalidated or self._held.closed:
            self._held = await self._writer.connect()
        try:
            async with self._held.begin():
                return await self._held.run_sync(work)
        except BaseException:
            held, self._held = self._held, None
            await held.close()
            raise

    async def read(self, work: Work[T]) -> T:
        async with self._reader.connect() as conn, conn.begin():
            return await conn.run_sync(work)

    async def dispose(self) -> None:
        if self._held is not None:
            await self._held.close()
            self._held = None
        await self._writer.dispose()
        await self._reader.dispose()


def _transaction(engine: Engine, work: Work[T]) -> T:
    with engine.connect() as conn, conn.begin():
        return work(conn)


async def _in_thread(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


def check_sqlite_path(path: Path) -> None:
    """Refuse, naming the path, a file that cannot be created, written or read as SQLite."""
    folder = path.parent
    if not folder.exists():
        raise StoreConfigError(f"storage folder {folder} does not exist (for {path})")
    if not folder.is_dir():
        raise StoreConfigError(f"storage folder {folder} is not a folder (for {path})")
    if path.exists() and not path.is_file():
        raise StoreConfigError(f"storage file {path} is not a regular file")
    # WAL needs to create -wal and -shm files beside the database, so the folder must be writable.
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreConfigError(f"storage folder {folder} is not writable (for {path})")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise StoreConfigError(f"storage file {path} is not readable and writable")
        with path.open("rb") as file:
            header = file.read(len(_SQLITE_MAGIC))
        if header and header != _SQLITE_MAGIC:
            raise CorruptStoreError(
                f"storage file {path} is not a SQLite database; it was left untouched "
                "(move it away or restore a backup)")


def _sqlite_engine(target: StoreURL, poolclass: Any, *, write: bool, wal: bool,
                   **pool: int) -> Engine:
    options: dict[str, Any] = {"poolclass": poolclass} if poolclass else dict(pool)
    # Connections move between our threads (never used by two at once): allow that.
    engine = create_engine(target.url, connect_args={"check_same_thread": False}, **options)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Our own BEGIN below, not the driver's implicit one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if wal and write:
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        if not write:
            cursor.execute("PRAGMA query_only = ON")
        cursor.close()

    begin = "BEGIN IMMEDIATE" if write else "BEGIN"

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock now: two writers (two processes) queue on busy_timeout
        # instead of one failing with "database is locked" when it upgrades a read lock. On the
        # driver itself (SQLAlchemy's execution path cost more than the statement); if it
        # fails, again through SQLAlchemy, which raises its error as it would anywhere.
        try:
            connection.connection.dbapi_connection.execute(begin)
        except sqlite3.Error:
            connection.exec_driver_sql(begin)

    return engine
