"""Async sending (SPEC §8): the outbox's workers.

``POST /sms`` with ``"mode": "async"`` writes the message as ``queued`` and answers 202; this
module sends it later. Up to ``storage.workers`` messages per process are claimed with a lease
(:mod:`gateway.store.outbox`) and sent through the same router, breakers and
:class:`~gateway.recorder.Recorder` as a sync send. What the router concludes decides the rest:

- sent, rejected, rate-limited or unknown: the final status, then the listeners are told
  (:meth:`Gateway.announce <gateway.service.Gateway.announce>`, the status callbacks);
- every provider failed, or every provider is open: back in the queue for a backoff of 1 s
  doubling to 5 min with full jitter, and never before the earliest breaker admits a call
  (so nothing spins while all are open; a provider's Retry-After opens its breaker that long);
- past its ``ttl``: ``expired`` (a housekeeping pass every 2 s; a put-back is never later).

Crash safety comes from the store: every attempt is written as started before the call. A
claim whose lease ran out is due again; if it holds an attempt that never finished, the message
may have been sent, so it becomes ``unknown`` instead (unless the template says
``on_unknown: failover``). Wake-ups: :meth:`Outbox.enqueued` on every enqueue (in-process),
polling every second as the fallback.
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
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.config import StorageConfig, TemplateConfig
from gateway.observe import Observer
from gateway.phones import normalize
from gateway.recorder import Recorder
from gateway.router import Outcome, Router, Snapshot
from gateway.store import AttemptEnd, NewMessage, Store, StoreError
from gateway.store.outbox import BACKOFF, PROVIDERS_OPEN, Claimed, OutboxNumbers
from providers.base import Message

log = logging.getLogger(__name__)

POLL = 1.0  # seconds between looks at the queue when no wake-up comes
TEND_EVERY = 2.0  # expiry and the depth/oldest numbers
MAX_BACKOFF = 300.0
RATE_WINDOW = 60.0  # the sending rate is over the last minute
EXPIRE_BATCH = 500
CRASHED = "the gateway stopped before the provider answered; it may have been sent"
_RETRY = frozenset({"failed", "unavailable"})  # nothing was sent: it may be tried again

Announce = Callable[[str, str | None], Awaitable[None]]


def backoff(retries: int, rand: Callable[[], float] = random.random) -> float:
    """Full jitter: a uniform wait up to 1 s doubled ``retries`` times, capped at 5 min."""
    return rand() * min(MAX_BACKOFF, 2.0 ** min(retries, 30))


class Outbox:
    """The workers of one process: claim, send, put back or finish, tend the queue."""

    def __init__(self, router: Router, observer: Observer, *,
                 wall_clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random) -> None:
        self.owner = uuid.uuid4().hex  # this process's name on its leases
        self.rand = rand
        self._router = router
        self._observer = observer
        self._wall = wall_clock
        self._store: Store | None = None
        self._snapshot: Callable[[], Snapshot] | None = None
        self._announce: Announce | None = None
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

    # -- life --------------------------------------------------------------------------------

    def start(self, store: Store, snapshot: Callable[[], Snapshot], storage: StorageConfig,
              announce: Announce) -> None:
        """Start claiming (the app's running context calls this once the runtime exists)."""
        self._store, self._snapshot, self._storage = store, snapshot, storage
        self._announce = announce
        self._tasks = [asyncio.create_task(self._tend_loop(), name="outbox-tend")]
        if storage.workers == 0:  # an intake-only process: others send what it queues
            return
        self._claiming = True
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
        """A message was queued here: the hook for telling other processes (PostgreSQL
        ``NOTIFY``); in-process, a wake-up."""
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
        if free <= 0:
            return POLL  # a slot that frees wakes the loop
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
                expired = await store.outbox.expire(EXPIRE_BATCH,
                                                    keep_params=self._keep_params())
                for message_id, callback_url in expired:
                    self._observer.on_outbox_send("expired")
                    log.info("send %s: expired (not sent before its ttl)", message_id)
                    await self._told(message_id, callback_url)
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
            task = asyncio.create_task(self._deliver(message), name=f"outbox-{message.id}")
            self._inflight[message.id] = task
            task.add_done_callback(functools.partial(self._done_sending, message.id))

    def _done_sending(self, message_id: str, _: asyncio.Task[None]) -> None:
        self._inflight.pop(message_id, None)
        self._start_ready()
        self.wake()  # claim more ahead

    # -- one message -------------------------------------------------------------------------

    async def _deliver(self, message: Claimed) -> None:
        try:
            await self._send(message)
        except StoreError as exc:  # its lease runs out and it is claimed again
            log.warning("send %s: the outbox could not record it (tried again later): %s",
                        message.id, exc)
        except Exception:
            log.exception("send %s: the outbox failed unexpectedly (tried again later)",
                          message.id)

    async def _send(self, claimed: Claimed) -> None:
        snapshot = self._require_snapshot()()
        template = snapshot.config.templates.get(claimed.template)
        if claimed.unfinished is not None:
            crashed = AttemptEnd(claimed.unfinished, "unknown", CRASHED)
            if template is None or template.on_unknown == "stop":
                await self._finish(claimed, "unknown", CRASHED, last=crashed)
                return
            await self._require_store().records.attempt_finished(
                claimed.id, claimed.unfinished, "unknown", error=CRASHED)
        if claimed.expires_at is not None and self._wall() >= claimed.expires_at:
            await self._finish(claimed, "expired", "not sent before its ttl")
            return
        if template is None:
            await self._finish(claimed, "failed",
                               f"template {claimed.template!r} is no longer configured")
            return
        recorder = Recorder(self._require_store().records, NewMessage(
            claimed.id, claimed.caller, claimed.template, claimed.numbers, claimed.params,
            mode="async"), keep_params=snapshot.config.storage.keep_params, created=True)
        message = Message(claimed.id, claimed.numbers, claimed.template, claimed.params)
        # Only routes read countries: parsing numbers again is skipped when none names any.
        countries = frozenset(_region(n) for n in claimed.numbers) \
            if any(r.countries for r in snapshot.config.routes) else frozenset()
        outcome = await self._router.send(snapshot, message, template, countries, recorder)
        if outcome.state in _RETRY:
            await self._put_back(claimed, snapshot, template, countries, outcome, recorder)
            return
        refused = _refused(message.to, outcome)
        await recorder.finish(outcome, refused)
        self._done(claimed, outcome.state, outcome.provider)
        await self._told(claimed.id, claimed.callback_url)

    async def _finish(self, claimed: Claimed, status: str, error: str,
                      last: AttemptEnd | None = None) -> None:
        finished = await self._require_store().records.finish(
            claimed.id, status, error=error, last=last, keep_params=self._keep_params())
        if finished:  # else another worker (this one's lease was lost) got there first
            self._done(claimed, status, None)
            await self._told(claimed.id, claimed.callback_url)

    def _done(self, claimed: Claimed, status: str, provider: str | None) -> None:
        self._observer.on_outbox_send(status)
        if status == "sent":
            self._sent.append(self._wall())
        log.info("send %s %s via %s: %s (async)", claimed.id, claimed.template,
                 provider or "-", status)

    async def _put_back(self, claimed: Claimed, snapshot: Snapshot, template: TemplateConfig,
                        countries: frozenset[str], outcome: Outcome, recorder: Recorder) -> None:
        """Nothing was sent: queue it again, after a backoff and once a provider may take it."""
        now = self._wall()
        store = self._require_store()
        if not self._claiming:  # stopping: the next start (or another replica) sends it
            await store.outbox.put_back(claimed.id, self.owner, now, waiting=BACKOFF,
                                        error=outcome.reason, last=recorder.ended,
                                        retried=False)
            return
        plan = snapshot.plan(template.name, countries)
        opened = min((m.breaker.retry_in() for m in plan), default=0.0)
        tried = any(a.sent and a.outcome == "failed" for a in outcome.attempts)
        wait = backoff(claimed.retries, self.rand)
        if opened > 0:
            wait = max(wait, opened + backoff(0, self.rand))  # spread the wake-ups a little
        at = now + wait
        if claimed.expires_at is not None and at >= claimed.expires_at:
            at = claimed.expires_at  # expired there, within TEND_EVERY
        waiting = PROVIDERS_OPEN if opened > 0 else BACKOFF
        kept = await store.outbox.put_back(claimed.id, self.owner, at, waiting=waiting,
                                           error=outcome.reason, last=recorder.ended,
                                           retried=tried or opened == 0)
        self._observer.on_outbox_send("retry" if kept else "lease_lost")
        log.info("send %s: %s; queued again in %.1fs (%s)", claimed.id, outcome.reason,
                 at - now, waiting)

    async def _told(self, message_id: str, callback_url: str | None) -> None:
        if self._announce is not None:
            await self._announce(message_id, callback_url)

    def _keep_params(self) -> bool:
        return self._require_snapshot()().config.storage.keep_params  # applies on reload

    def _require_store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the outbox is not started")
        return self._store

    def _require_snapshot(self) -> Callable[[], Snapshot]:
        if self._snapshot is None:
            raise RuntimeError("the outbox is not started")
        return self._snapshot


def _ahead(workers: int) -> int:
    """How many messages to hold claimed beyond the busy workers."""
    return max(1, workers // 2)


def _age(numbers: OutboxNumbers, now: float) -> float:
    return 0.0 if numbers.oldest is None else round(max(0.0, now - numbers.oldest), 1)


def _region(number: str) -> str:
    try:
        return normalize(number, "ZZ").region
    except ValueError:  # valid when queued; a newer numbering plan may say otherwise
        return "ZZ"


def _refused(to: tuple[str, ...], outcome: Outcome) -> dict[str, str]:
    """Our number -> the provider's code, for the recipients it refused (matched by digits)."""
    ours = {number.lstrip("+"): number for number in to}
    return {ours[n.lstrip("+")]: code for n, code in outcome.refused if n.lstrip("+") in ours}
