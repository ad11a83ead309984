"""Async sending (SPEC §8): the outbox's workers in one process.

``POST /sms`` with ``"mode": "async"`` writes the message as ``queued`` and answers 202
(:meth:`Outbox.enqueue`); this module sends it later. Up to ``storage.workers`` messages per
process are sent at once, and half as many again are claimed ahead, each under a lease
(:mod:`gateway.store.outbox`) renewed while it is held; what one message goes through is
:mod:`gateway.outbox_send`. A housekeeping pass every 2 s expires what is past its ``ttl`` and
counts the queue (depth, oldest, waiting for providers) for ``/status`` and ``/metrics``.

Crash safety comes from the store: every attempt is written as started before its call, and a
claim whose lease ran out is due again (its unfinished attempt makes it ``unknown``). On
SIGTERM the workers stop claiming, in-flight sends get ``shutdown_timeout`` and every lease
still held is released.

Wake-ups: :meth:`Outbox.enqueued` on every enqueue wakes this process's claim loop and, on
PostgreSQL, NOTIFYs channel ``outbox`` so every other replica's claim loop looks now
(:meth:`Outbox.wake`, called by its LISTEN handler). The NOTIFYs are coalesced: at most one is
being written at a time, and one more follows it if anything was queued meanwhile, at least
NOTIFY_GAP apart; so a burst of enqueues costs a handful of NOTIFYs, and every enqueue is
followed by a NOTIFY written after it committed. A notification is a hint: polling every second
stays the fallback (and the only cross-process way on SQLite).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from gateway.config import StorageConfig
from gateway.observe import Observer
from gateway.outbox_send import Announce, OutboxSender
from gateway.router import Router, Snapshot
from gateway.store import NewMessage, Store, StoreError
from gateway.store.outbox import Claimed, OutboxNumbers

log = logging.getLogger(__name__)

POLL = 1.0  # seconds between looks at the queue when no wake-up comes
TEND_EVERY = 2.0  # expiry and the depth/oldest numbers
RATE_WINDOW = 60.0  # the sending rate is over the last minute
CHANNEL = "outbox"  # NOTIFYed (PostgreSQL) after enqueues; payload: the sender's owner id
NOTIFY_GAP = 0.005  # seconds at least between two NOTIFYs of one process
EXPIRE_BATCH = 500


class Outbox:
    """The workers of one process: claim, send, put back or finish, tend the queue."""

    def __init__(self, router: Router, observer: Observer, *,
                 wall_clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random) -> None:
        self.owner = uuid.uuid4().hex  # this process's name on its leases
        self.rand = rand  # the backoff's jitter (tests fix it)
        self._router = router
        self._observer = observer
        self._wall = wall_clock
        self._store: Store | None = None
        self._sender: OutboxSender | None = None
        self._storage = StorageConfig()
        self._wake = asyncio.Event()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        # Claimed ahead, so a freed slot starts its next send without waiting for a claim;
        # held under this process's lease like the in-flight ones (released at shutdown).
        self._ready: collections.deque[Claimed] = collections.deque()
        self._tasks: list[asyncio.Task[None]] = []
        self._claiming = False
        self._sent: collections.deque[float] = collections.deque()
        self.numbers = OutboxNumbers()
        self._notifier: asyncio.Task[None] | None = None  # the NOTIFY being written, if any
        self._notify_again = False  # something was queued since that NOTIFY began
        self.notified = 0  # NOTIFYs written (coalesced enqueues)
        self.woken_by_others = 0  # notifications from other processes' enqueues

    # -- life --------------------------------------------------------------------------------

    def start(self, store: Store, snapshot: Callable[[], Snapshot], storage: StorageConfig,
              announce: Announce) -> None:
        """Start claiming (the app's running context calls this once the runtime exists)."""
        self._store, self._storage = store, storage
        self._sender = OutboxSender(
            self._router, self._observer, store, snapshot, announce, self.owner, self._wall,
            lambda: self.rand(), lambda: self._claiming, lambda: self._sent.append(self._wall()))
        self._tasks = [asyncio.create_task(self._tend_loop(), name="outbox-tend")]
        if storage.workers == 0:  # an intake-only process: others send what it queues
            return
        self._claiming = True
        store.listen(CHANNEL, self._on_notification)
        self._tasks += [asyncio.create_task(self._claim_loop(), name="outbox-claims"),
                        asyncio.create_task(self._renew_loop(), name="outbox-leases")]

    def stop_claiming(self) -> None:
        """SIGTERM: take nothing new; what is in flight goes on (see :meth:`stop`)."""
        self._claiming = False
        self.wake()

    async def stop(self, timeout: float) -> None:
        """Let in-flight sends finish for up to ``timeout`` seconds, cancel the rest, and give
        back every lease this process still holds, so another worker takes them at once."""
        self.stop_claiming()
        self._ready.clear()  # never started: release() below gives them back
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=max(0.0, timeout))
        if self._notifier is not None:
            self._tasks.append(self._notifier)
            self._notifier = None
        for task in [*self._inflight.values(), *self._tasks]:
            task.cancel()
        for task in [*self._inflight.values(), *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._store is not None:
            try:
                released = await self._store.outbox.release(self.owner)
            except StoreError as exc:  # their leases run out instead
                log.warning("outbox: leases not released (they expire by themselves): %s", exc)
            else:
                if released:
                    log.info("outbox: %d message(s) released for the next start", released)

    # -- wake-ups ----------------------------------------------------------------------------

    def wake(self) -> None:
        """Look at the queue now (a message was queued, a slot freed, or another replica said
        so: a PostgreSQL LISTEN handler calls this)."""
        self._wake.set()

    def enqueued(self) -> None:
        """A message was queued here: wake this process's claim loop and (PostgreSQL) tell the
        other replicas, coalesced (see the module's doc)."""
        self.wake()
        store = self._store
        if store is None or not store.signals.relayed:
            return
        self._notify_again = True
        if self._notifier is None or self._notifier.done():
            self._notifier = asyncio.create_task(self._notifying(store), name="outbox-notify")

    async def _notifying(self, store: Store) -> None:
        while self._notify_again:
            self._notify_again = False  # what is queued from here on gets another NOTIFY
            try:
                await store.notify(CHANNEL, self.owner)
                self.notified += 1
            except StoreError:
                pass  # a hint only: the others' polling finds the message; health logs it
            await asyncio.sleep(NOTIFY_GAP)

    def _on_notification(self, payload: str) -> None:
        if payload != self.owner:  # our own enqueues woke us already
            self.woken_by_others += 1
            self.wake()

    async def enqueue(self, new: NewMessage) -> None:
        """Write ``new`` as queued (durably: a StoreError means it was not accepted)."""
        await self._require_store().records.create(new)
        self.enqueued()

    # -- what is seen ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The outbox's part of ``/status`` and the dashboard."""
        numbers, now = self.numbers, self._wall()
        self._trim(now)
        return {
            "depth": numbers.depth,
            "oldest_seconds": _age(numbers, now),
            "waiting_for_providers": numbers.waiting_open,
            "in_flight": len(self._inflight),
            "claimed_ahead": len(self._ready),
            "workers": self._storage.workers,
            "sending_per_second": round(len(self._sent) / RATE_WINDOW, 2),
            "notified": self.notified,
            "woken_by_others": self.woken_by_others,
        }

    def _trim(self, now: float) -> None:
        while self._sent and self._sent[0] < now - RATE_WINDOW:
            self._sent.popleft()

    # -- the loops ---------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        polled = False  # woken by the timer, not by a queued message or a free slot
        while self._claiming:
            self._wake.clear()  # a wake-up from here on is not lost
            try:
                wait = await self._claim_due(polled)
            except StoreError as exc:
                log.warning("outbox: cannot claim (trying again): %s", exc)
                wait = POLL
            if not self._claiming:
                return
            try:  # a floor: a due row another replica holds locked must not make this spin
                await asyncio.wait_for(self._wake.wait(), max(wait, 0.01))
                polled = False
            except TimeoutError:
                polled = True

    async def _claim_due(self, polled: bool) -> float:
        """Claim what is due into the free slots (and ahead); how long to wait until the next
        look. Polled with nothing said to be waiting, a read finds out before any write."""
        store = self._require_store()
        workers = self._storage.workers
        free = workers + _ahead(workers) - len(self._inflight) - len(self._ready)
        if free <= 0 or (self._ready and free < _ahead(workers) // 2):
            return POLL  # claims come in batches while some are still ready; a slot wakes us
        if polled:
            due = await store.outbox.next_due()
            if due is None or due > self._wall():
                return self._until(due)
        claimed = await store.outbox.claim(self.owner, self._storage.lease, free)
        if not self._claiming:  # stopped meanwhile: stop() releases them
            return 0.0
        self._ready.extend(claimed)
        self._start_ready()
        if len(claimed) == free:
            return POLL  # more may be due: the next free slot wakes the loop
        return self._until(await store.outbox.next_due())

    def _until(self, due: float | None) -> float:
        return POLL if due is None else min(POLL, max(0.0, due - self._wall()))

    async def _tend_loop(self) -> None:
        while True:
            await self.tend()
            await asyncio.sleep(TEND_EVERY)

    async def tend(self) -> None:
        """One housekeeping pass: expire what is past its ttl, then count what waits."""
        store = self._require_store()
        try:
            while True:
                keep = self._require_sender().snapshot().config.storage.keep_params
                expired = await store.outbox.expire(EXPIRE_BATCH, keep_params=keep)
                for message_id, callback_url in expired:
                    await self._require_sender().expired(message_id, callback_url)
                if len(expired) < EXPIRE_BATCH:
                    break
            self.numbers = await store.outbox.numbers()
        except StoreError as exc:
            log.warning("outbox: housekeeping failed (trying again): %s", exc)
        self._observer.on_outbox(self.numbers.depth, _age(self.numbers, self._wall()))

    async def _renew_loop(self) -> None:
        store = self._require_store()
        while True:
            await asyncio.sleep(self._storage.lease / 3)
            try:
                held = [*self._inflight, *(c.id for c in self._ready)]
                await store.outbox.renew(self.owner, held, self._storage.lease)
            except StoreError as exc:
                log.warning("outbox: leases not renewed: %s", exc)

    def _start_ready(self) -> None:
        """Fill the free slots from what was claimed ahead."""
        while self._ready and self._claiming and len(self._inflight) < self._storage.workers:
            message = self._ready.popleft()
            task = asyncio.create_task(self._require_sender().deliver(message),
                                       name=f"outbox-{message.id}")
            self._inflight[message.id] = task
            task.add_done_callback(functools.partial(self._done_sending, message.id))

    def _done_sending(self, message_id: str, _: asyncio.Task[None]) -> None:
        self._inflight.pop(message_id, None)
        self._start_ready()
        self.wake()  # claim more ahead

    def _require_store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the outbox is not started")
        return self._store

    def _require_sender(self) -> OutboxSender:
        if self._sender is None:
            raise RuntimeError("the outbox is not started")
        return self._sender


def _ahead(workers: int) -> int:
    """How many messages to hold claimed beyond the busy workers."""
    return max(1, workers // 2)


def _age(numbers: OutboxNumbers, now: float) -> float:
    return 0.0 if numbers.oldest is None else round(max(0.0, now - numbers.oldest), 1)
