"""Writes that must not be lost when the store goes away mid-send.

A send whose provider was called while the store was up, and which finished after it went
down, was (maybe) delivered: its final status and its Idempotency-Key's answer are kept here, in
memory, and written when the store is back (in order, oldest first). Until then its record reads
``sending``. A process that stops before the store returns loses them (logged, with the count):
such records stay ``sending`` with an attempt started and never finished, which the outbox's
recovery treats as ``unknown``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from gateway.store import StoreError

log = logging.getLogger("gateway.service")

MAX_KEPT = 100_000  # beyond this the oldest are dropped (logged): memory is not unbounded
Write = Callable[[], Awaitable[object]]


class LateWrites:
    """A queue of writes, retried when the store is back."""

    def __init__(self, max_kept: int = MAX_KEPT) -> None:
        self._queue: deque[tuple[str, Write]] = deque()
        self._max = max_kept
        self._flushing: asyncio.Task[int] | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def keep(self, what: str, write: Write) -> None:
        """Write ``write`` later; ``what`` names it in the log."""
        if len(self._queue) >= self._max:
            dropped, _ = self._queue.popleft()
            log.error("%s: dropped, too many writes wait for the store", dropped)
        self._queue.append((what, write))

    def store_back(self, up: bool) -> None:
        """A store health listener: when it is back, write what waits (in the background)."""
        if up and self._queue and (self._flushing is None or self._flushing.done()):
            self._flushing = asyncio.get_running_loop().create_task(self.flush(),
                                                                    name="late-writes")

    async def flush(self) -> int:
        """Write what waits, oldest first, until one fails; how many were written."""
        written = 0
        while self._queue:
            _what, write = self._queue[0]
            try:
                await write()
            except StoreError:
                break  # down again: the next "back" retries from here
            self._queue.popleft()
            written += 1
        if written:
            log.warning("store back: %d late write%s recorded (sends finished while it was "
                        "away)", written, "" if written == 1 else "s")
        return written

    async def close(self) -> None:
        """A last try; what still waits is lost (logged)."""
        if self._flushing is not None:
            await self._flushing
        await self.flush()
        if self._queue:
            log.error("stopping with %d writes the store never took: %s", len(self._queue),
                      ", ".join(what for what, _ in list(self._queue)[:20]))
