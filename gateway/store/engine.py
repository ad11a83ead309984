"""Engines for one storage URL: a one-connection writer and a reader pool.

SQLite follows PrefectHQ/prefect's set-up: the driver's own transaction handling is switched off
(``isolation_level = None``) and we emit ``BEGIN IMMEDIATE`` ourselves, so a write transaction
takes the write lock at its start (no deadlock-prone lock upgrade) and savepoints work. WAL lets
the reader pool read while the writer writes; ``synchronous=NORMAL`` in WAL mode is durable
across a process crash and costs one fsync per checkpoint, not per commit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from gateway.store.errors import CorruptStoreError, StoreConfigError
from gateway.store.urls import StoreURL

BUSY_TIMEOUT_MS = 5000
READERS = 4
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True, slots=True)
class Engines:
    """The writer (one connection) and the readers; the same engine for both in memory mode."""

    writer: AsyncEngine
    reader: AsyncEngine

    @property
    def shared(self) -> bool:
        """True when reads and writes share one connection (memory): they must take turns."""
        return self.writer is self.reader

    async def dispose(self) -> None:
        """Close every connection."""
        await self.writer.dispose()
        if not self.shared:
            await self.reader.dispose()


def create_engines(target: StoreURL) -> Engines:
    """Engines for ``target``; a SQLite file is checked first (folder, rights, header)."""
    if target.kind == "memory":
        # One in-memory database lives as long as its one connection: StaticPool keeps it.
        engine = create_async_engine(target.url, poolclass=StaticPool)
        _sqlite_pragmas(engine, write=True, wal=False)
        return Engines(engine, engine)
    if target.kind == "sqlite":
        assert target.path is not None
        check_sqlite_path(target.path)
        writer = create_async_engine(target.url, pool_size=1, max_overflow=0)
        reader = create_async_engine(target.url, pool_size=READERS, max_overflow=0)
        _sqlite_pragmas(writer, write=True, wal=True)
        _sqlite_pragmas(reader, write=False, wal=True)
        return Engines(writer, reader)
    writer = create_async_engine(target.url, pool_size=1, max_overflow=0, pool_pre_ping=True)
    reader = create_async_engine(target.url, pool_size=READERS, max_overflow=2,
                                 pool_pre_ping=True)
    return Engines(writer, reader)


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


def _sqlite_pragmas(engine: AsyncEngine, *, write: bool, wal: bool) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
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

    @event.listens_for(sync_engine, "begin")
    def _begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock now: two writers (two processes) queue on busy_timeout
        # instead of one failing with "database is locked" when it upgrades a read lock.
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
