"""Opening the store: parse the URL, check the file, migrate, start the writer."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from gateway.store.db import Clock, Database
from gateway.store.engine import Backend, create_backend
from gateway.store.errors import (
    CorruptStoreError,
    StoreConfigError,
    StoreError,
    StoreUnavailableError,
)
from gateway.store.idempotency import DEFAULT_TTL, Idempotency
from gateway.store.migrate import upgrade_connection
from gateway.store.outbox import OutboxStore
from gateway.store.provider_state import ProviderStates
from gateway.store.records import RecordStore
from gateway.store.urls import StoreURL, parse, scrub
from gateway.store.writer import reason

# What SQLite says about a file that is there but is not (or no longer) a database.
_CORRUPT = ("file is not a database", "database disk image is malformed")


class Store:
    """The message store: ``records``, ``idempotency`` and ``providers``, over one database."""

    def __init__(self, target: StoreURL, db: Database, idempotency_ttl: float) -> None:
        self.target = target
        self._db = db
        self.records = RecordStore(db)
        self.idempotency = Idempotency(db, idempotency_ttl)
        self.providers = ProviderStates(db)
        self.outbox = OutboxStore(db)
        # The file as opened: if it is moved or deleted, SQLite goes on writing to the old
        # inode and every later write would vanish with it, so check() compares.
        self._inode = _inode(target.path) if target.path else None

    @property
    def database(self) -> Database:
        """The door the concern modules use (for the store's own next modules and tests)."""
        return self._db

    @property
    def write_engine(self) -> Engine:
        """The engine the group-commit writer uses (tests count its commits)."""
        return self._db.write_engine

    async def sweep(self, retention: float) -> tuple[int, int]:
        """One maintenance pass: records older than ``retention`` seconds and expired
        idempotency keys deleted in small batches; (records, keys) deleted."""
        records = await self.records.purge(self._db.clock() - retention)
        return records, await self.idempotency.expire()

    def ensure_file(self) -> None:
        """Raise StoreUnavailableError if the SQLite file was moved or deleted while open:
        what is written then would vanish with it. One stat(): cheap enough for every send."""
        if self.target.path is not None and _inode(self.target.path) != self._inode:
            raise StoreUnavailableError(
                f"storage file {self.target.path} was moved or deleted while in use")

    async def check(self) -> None:
        """Raise StoreUnavailableError unless the database answers (for a readiness probe); a
        SQLite file that was moved or deleted while open counts as gone."""
        self.ensure_file()
        await self._db.read(lambda conn: conn.exec_driver_sql("SELECT 1").scalar())

    async def close(self) -> None:
        """Write what is queued, then close every connection."""
        await self._db.close()


async def open_store(url: str, *, base: Path | None = None, clock: Clock = time.time,
                     idempotency_ttl: float = DEFAULT_TTL) -> Store:
    """Open (and migrate) the store at ``url``; relative SQLite paths resolve against ``base``.

    StoreConfigError (exit 2 at start) for an unusable URL, file or schema;
    StoreUnavailableError when the database cannot be reached.
    """
    target = parse(url, base)
    db = Database(create_backend(target), clock)
    try:
        await _migrate(target, db.backend)
    except BaseException:
        await db.backend.dispose()
        raise
    db.start()
    return Store(target, db, idempotency_ttl)


async def upgrade(url: str, *, base: Path | None = None) -> str:
    """Migrate the database at ``url`` to this code's schema; the revision it is now at."""
    target = parse(url, base)
    backend = create_backend(target)
    try:
        return await _migrate(target, backend)
    finally:
        await backend.dispose()


async def _migrate(target: StoreURL, backend: Backend) -> str:
    try:
        return await backend.write(lambda conn: upgrade_connection(conn, target.shown))
    except StoreError:
        raise
    except (DBAPIError, OSError) as exc:
        raise _explain(target, exc) from None


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _explain(target: StoreURL, exc: BaseException) -> StoreError:
    """A start-up failure in words that name the file or the (password-free) URL."""
    why = reason(exc)
    if target.kind == "postgresql":
        return StoreUnavailableError(
            f"cannot use the PostgreSQL store at {target.shown}: "
            f"{scrub(why, target.url.render_as_string(hide_password=False))}")
    where = target.path or "memory"
    if any(text in why for text in _CORRUPT):
        return CorruptStoreError(
            f"storage file {where} is corrupt ({why}); it was left untouched: "
            "restore a backup or move it away")
    return StoreConfigError(f"cannot use the storage file {where}: {why}")
