"""Group commit: one task owns the write connection and commits queued writes together.

A caller hands over a write (a coroutine function taking the connection) and awaits its own
result. While one transaction commits, the next writes queue up; the writer then runs them all
in one transaction, each in its own savepoint (one failing write does not undo its neighbours),
and commits once. Under load that is one fsync for many messages; alone, a write waits for no
timer. A write whose caller was cancelled still happens: it was already promised to the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.store.errors import StoreClosedError, StoreUnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")
Write = Callable[[AsyncConnection], Awaitable[T]]
MAX_BATCH = 256


@dataclass(slots=True)
class _Job:
    write: Write[Any]
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = field(default=None)


class GroupWriter:
    """Runs writes on ``engine`` in batches: one transaction, one commit, per batch."""

    def __init__(self, engine: AsyncEngine, lock: asyncio.Lock | None = None,
                 max_batch: int = MAX_BATCH) -> None:
        self._engine = engine
        self._lock = lock  # memory mode: reads share the one connection and take turns
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        """Start the writer task (on the running loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="store-writer")

    async def write(self, write: Write[T]) -> T:
        """Queue ``write`` and wait until its batch is committed; its result or its error."""
        if self._closed or self._task is None:
            raise StoreClosedError("the store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(write, future))
        return await asyncio.shield(future)

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
            async with self._turn(), self._engine.connect() as conn, conn.begin():
                for job in batch:
                    await self._one(conn, job)
        except (DBAPIError, OSError) as exc:
            # The commit (or the connection) failed: nothing of this batch is durable.
            log.warning("store write failed: %s", reason(exc))
            unavailable = StoreUnavailableError(f"the store cannot be written: {reason(exc)}")
            for job in batch:
                _settle(job.future, None, job.error or unavailable)
            return
        except BaseException as exc:  # cancelled mid-batch: no caller may wait forever
            for job in batch:
                _settle(job.future, None, StoreClosedError(f"the store stopped: {exc!r}"))
            raise
        for job in batch:
            _settle(job.future, job.result, job.error)

    async def _one(self, conn: AsyncConnection, job: _Job) -> None:
        savepoint = await conn.begin_nested()
        try:
            job.result = await job.write(conn)
        except IntegrityError as exc:
            job.error = exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise  # the connection is gone: fail the batch
            # e.g. a deadlock between replicas: this write fails, its neighbours go on
            job.error = StoreUnavailableError(f"the store refused a write: {reason(exc)}")
        except Exception as exc:  # the caller gets its own error back
            job.error = exc
        if job.error is None:
            await savepoint.commit()
        else:
            await savepoint.rollback()

    def _turn(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._lock if self._lock is not None else contextlib.nullcontext()


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
