"""Opening the store: parse the URL, check the file, migrate, start the writer."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
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
from gateway.store.health import StoreHealth, is_outage
from gateway.store.idempotency import DEFAULT_TTL, Idempotency
from gateway.store.interrupted import Settled, settle, settle_interrupted
from gateway.store.limits import LimitCounts
from gateway.store.migrate import upgrade_connection
from gateway.store.outbox import OutboxStore
from gateway.store.provider_state import ProviderStates
from gateway.store.receipts import ReceiptStore
from gateway.store.records import RecordStore
from gateway.store.replicas import ReplicaTable
from gateway.store.signals import Callback, Signals
from gateway.store.urls import StoreURL, parse, scrub
from gateway.store.writer import reason

log = logging.getLogger("gateway.store")

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
        self.limits = LimitCounts(db)
        self.receipts = ReceiptStore(db)
        self.replicas = ReplicaTable(db)
        self.signals = Signals(target, db)
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

    @property
    def health(self) -> StoreHealth:
        """Up or down (fail fast while down; reconnects by itself)."""
        return self._db.health

    async def notify(self, channel: str, payload: str = "") -> None:
        """Wake the listeners of ``channel`` on every replica (in this process on SQLite)."""
        await self.signals.notify(channel, payload)

    def listen(self, channel: str, callback: Callback) -> None:
        """Call ``callback(payload)`` on each notification of ``channel`` (a hint: read too)."""
        self.signals.listen(channel, callback)

    async def sweep(self, retention: float) -> tuple[int, int]:
        """One maintenance pass: records older than ``retention`` seconds and expired
        idempotency keys deleted in small batches; (records, keys) deleted."""
        records = await self.records.purge(self._db.clock() - retention)
        return records, await self.idempotency.expire()

    async def settle_interrupted(self, older_than: float, *,
                                 keep_params: bool = False) -> list[Settled]:
        """Sync sends a crash left ``sending`` for over ``older_than`` seconds, settled
        (``unknown``: maybe sent; ``failed``: no provider was called); see interrupted.py."""
        return await settle_interrupted(self._db, older_than, keep_params=keep_params)

    async def settle(self, ids: Sequence[str], *, keep_params: bool = False) -> list[Settled]:
        """Settle these sync records if still ``sending``, whatever their age (the caller knows
        their process is gone: an Idempotency-Key claim it left outlived any send)."""
        return await self._db.write(lambda conn: settle(conn, ids, self._db.now_us(),
                                                        keep_params=keep_params))

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
        await self.signals.close()
        await self._db.close()


async def open_store(url: str, *, base: Path | None = None, clock: Clock = time.time,
                     idempotency_ttl: float = DEFAULT_TTL, wait: bool = False) -> Store:
    """Open (and migrate) the store at ``url``; relative SQLite paths resolve against ``base``.

    StoreConfigError (exit 2 at start) for an unusable URL, file or schema (a wrong password or
    a missing database too); StoreUnavailableError when the database cannot be reached, unless
    ``wait`` and it is PostgreSQL: then the store is returned *down* (every operation fails fast
    with StoreUnavailableError) and it migrates and opens by itself once the server answers.
    """
    target = parse(url, base)
    db = Database(create_backend(target), clock, target.shown)
    try:
        await _migrate(target, db.backend)
    except StoreUnavailableError as exc:
        if not (wait and target.kind == "postgresql"):
            await db.backend.dispose()
            raise
        _open_later(target, db, str(exc))
    except BaseException:
        await db.backend.dispose()
        raise
    else:
        db.start()
    return Store(target, db, idempotency_ttl)


def _open_later(target: StoreURL, db: Database, why: str) -> None:
    """The server did not answer at start: serve 503s, probe with backoff, then migrate and
    start the writer (the probe's success brings the store up)."""
    told: list[str] = []

    async def opening() -> None:
        try:
            await _migrate(target, db.backend)
        except StoreConfigError as exc:  # the server answers, but cannot be used: say so once
            if str(exc) not in told:
                told.append(str(exc))
                log.error("store reachable but not usable (still retrying): %s", exc)
            raise
        db.health.probe = db.ping
        db.start()
        db.health.trials = True

    db.health.probe = opening
    db.health.trials = False  # a read that went through must not bring up an unmigrated store
    db.health.failed(why.removeprefix(f"cannot use the PostgreSQL store at {target.shown}: "))


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
        # unreachable (refused, timed out, failing over): maybe soon; a wrong password, user or
        # database name: not until the config changes
        error = StoreUnavailableError if is_outage(exc) else StoreConfigError
        return error(
            f"cannot use the PostgreSQL store at {target.shown}: "
            f"{scrub(why, target.url.render_as_string(hide_password=False))}")
    where = target.path or "memory"
    if any(text in why for text in _CORRUPT):
        return CorruptStoreError(
            f"storage file {where} is corrupt ({why}); it was left untouched: "
            "restore a backup or move it away")
    return StoreConfigError(f"cannot use the storage file {where}: {why}")
