"""Group commit: one task feeds the write connection and commits queued writes together.

A caller hands over a write (a function of a Connection) and awaits its own result. While one
transaction commits, the next writes queue up; the writer then runs them all in one transaction
and commits once: under load, one fsync for many messages; alone, a write waits for no timer.
If one write of a batch fails, the batch is rolled back and run again with a savepoint around
each write, so the failure is that caller's alone (savepoints cost two statements a write, so
they are paid only then). A write whose caller was cancelled still happens: it was promised.

On PostgreSQL each statement is a round trip, and a batch's writes would run one after another.
A write may therefore also come as one statement (``Bulk``): the writes of a batch with the same
statement run as one pipelined ``executemany`` (one round trip for all of them), each getting
the result its bulk form promised. A bulk statement is written to fail unless everything went
as the common case expects (the row was there, not yet final); then the batch runs again as
functions, with savepoints, and each caller gets what its own function says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from gateway.store.engine import Backend, Work
from gateway.store.errors import StoreClosedError, StoreUnavailableError
from gateway.store.health import StoreHealth, is_outage
from gateway.store.prepared import Prepared

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BATCH = 256


@dataclass(frozen=True, slots=True)
class Bulk:
    """A write as one statement with its parameters, and the result it gives when that
    statement succeeds (PostgreSQL runs a batch's writes of one statement together)."""

    statement: Prepared
    params: Mapping[str, Any]
    result: Any = None


@dataclass(slots=True)
class _Job:
    work: Work[Any]
    future: asyncio.Future[Any]
    bulk: Bulk | None = None
    result: Any = None
    error: BaseException | None = None


class _WorkFailed(Exception):
    """One write of an unprotected batch raised: roll back, run again with savepoints."""


class GroupWriter:
    """Runs writes through ``backend`` in batches: one transaction, one commit, per batch."""

    def __init__(self, backend: Backend, max_batch: int = MAX_BATCH,
                 health: StoreHealth | None = None) -> None:
        self._backend = backend
        self._health = health
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        """Start the writer task (on the running loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="store-writer")

    async def write(self, work: Work[T], bulk: Bulk | None = None) -> T:
        """Queue ``work`` and wait until its batch is committed; its result or its error.
        ``bulk``: the same write as one statement, which PostgreSQL may run with others."""
        if self._closed:
            raise StoreClosedError("the store is closed")
        if self._health is not None:
            self._health.check()  # down: fail now, not after a connect timeout per batch
        if self._task is None:
            raise StoreClosedError("the store is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(work, future, bulk))
        # No shield: a cancelled caller cancels only its future; the job stays queued and runs
        # (_settle skips a done future). A shield cost a second future and callback per write.
        return await future

    async def close(self) -> None:
        """Refuse new writes, finish the queued ones, stop the task."""
        self._closed = True
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit(self, batch: list[_Job]) -> None:
        try:
            try:
                await self._backend.write(_unprotected(batch))
            except _WorkFailed as failed:
                assert isinstance(failed.__cause__, Exception)
                if is_outage(failed.__cause__):  # the connection, not the write: all fail
                    raise failed.__cause__ from None
                if len(batch) == 1:  # alone, and rolled back: its error is simply its own
                    batch[0].error = _own_error(failed.__cause__)
                else:
                    for job in batch:
                        job.result = job.error = None
                    await self._backend.write(_protected(batch))
        except Exception as exc:
            # The commit or the connection failed (or something unforeseen): nothing of this
            # batch is durable; its callers hear so, and the writer goes on with the next batch.
            if self._health is not None and is_outage(exc):
                self._health.failed(reason(exc))  # logged once, not once per batch
            elif isinstance(exc, DBAPIError | OSError):
                log.warning("store write failed: %s", reason(exc))
            else:
                log.exception("store write failed unexpectedly")
            unavailable = StoreUnavailableError(f"the store cannot be written: {reason(exc)}")
            for job in batch:
                _settle(job.future, None, job.error or unavailable)
            return
        except BaseException as exc:  # cancelled mid-batch: no caller may wait forever
            for job in batch:
                _settle(job.future, None, StoreClosedError(f"the store stopped: {exc!r}"))
            raise
        if self._health is not None and not self._health.up:  # a trial went through
            self._health.succeeded()
        for job in batch:
            _settle(job.future, job.result, job.error)


def _unprotected(batch: list[_Job]) -> Callable[[Connection], None]:
    def run(conn: Connection) -> None:
        together = _together(batch) if conn.dialect.name == "postgresql" else {}
        for statement, jobs in together.items():
            try:  # failed: whose write it was is not known; all run again, one by one
                statement.many(conn, [job.bulk.params for job in jobs if job.bulk])
            except Exception as exc:
                raise _WorkFailed from exc
            for job in jobs:
                job.result = job.bulk.result if job.bulk else None
        done = {id(job) for jobs in together.values() for job in jobs}
        for job in batch:
            if id(job) in done:
                continue
            try:
                job.result = job.work(conn)
            except Exception as exc:
                raise _WorkFailed from exc
    return run


def _together(batch: list[_Job]) -> dict[Prepared, list[_Job]]:
    """The batch's bulk writes by statement, where two or more share one. Any order of a
    batch's writes is a right one: their callers were all waiting at once."""
    by_statement: dict[Prepared, list[_Job]] = {}
    for job in batch:
        if job.bulk is not None:
            by_statement.setdefault(job.bulk.statement, []).append(job)
    return {statement: jobs for statement, jobs in by_statement.items() if len(jobs) > 1}


def _protected(batch: list[_Job]) -> Callable[[Connection], None]:
    def run(conn: Connection) -> None:
        for job in batch:
            savepoint = conn.begin_nested()
            try:
                job.result = job.work(conn)
            except Exception as exc:
                if isinstance(exc, DBAPIError) and exc.connection_invalidated:
                    raise  # the connection is gone: fail the batch
                savepoint.rollback()
                job.error = _own_error(exc)
            else:
                savepoint.commit()
    return run


def _own_error(exc: Exception) -> BaseException:
    """What the caller of a failed write gets: its own error, or "unavailable" for the
    database refusing (a deadlock between replicas, say)."""
    if isinstance(exc, DBAPIError) and not isinstance(exc, IntegrityError):
        return StoreUnavailableError(f"the store refused a write: {reason(exc)}")
    return exc


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled: the write stands, nobody is waiting
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def reason(exc: BaseException) -> str:
    """The driver's message without the SQL statement and parameters SQLAlchemy appends."""
    original = getattr(exc, "orig", None) or exc
    return str(original).splitlines()[0] if str(original) else type(original).__name__
