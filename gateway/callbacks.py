"""Status callbacks (SPEC §8): queued when a message's sending is over or a receipt moves it,
then POSTed, signed, by a task of their own until the receiver answers 2xx or 24 h have passed.

Queueing is one store write (the gateway's listener, :meth:`Gateway.announce`); no HTTP call
ever runs on a send's path. The sender has its own small session: its own connections, its own
concurrency limit, its own timeout, a resolver that refuses private addresses for hosts that
were not listed exactly, and no redirects. A receiver that hangs or fails holds only callback
slots and delays only its own retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import random
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from gateway import __version__
from gateway.callback_rules import CallbackHosts, allowed_hosts, normal_host, url_problem
from gateway.records import view
from gateway.service import Gateway
from gateway.store import MessageRecord, StoreError
from gateway.store.callbacks import CallbackJob, CallbackQueue

log = logging.getLogger(__name__)

SIGNATURE = "X-SMS-Gateway-Signature"
TIMESTAMP = "X-SMS-Gateway-Timestamp"
EVENT = "X-SMS-Gateway-Event"
CONCURRENCY = 64  # callback POSTs in flight per process
PER_HOST = 4  # connections to one receiver: a hanging one holds no more than these
POLL = 2.0  # seconds between looks at the queue when nothing woke the sender
COALESCE = 0.01  # seconds a woken sender waits for more callbacks before it looks


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` hex HMAC-SHA256 of ``timestamp.body``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: ``base`` doubling to ``cap``, for ``max_age`` seconds
    from the callback's creation, then given up."""

    base: float = 5.0
    cap: float = 1800.0
    max_age: float = 24 * 3600.0

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Seconds before the next try after ``attempts`` failed ones: half the step fixed,
        half random, so receivers that failed together do not retry together."""
        step = min(self.cap, self.base * 2.0 ** min(attempts - 1, 32))
        return step / 2 + rng.uniform(0, step / 2)


class _GuardedResolver(AbstractResolver):
    """DNS, minus the addresses a host may not reach: a wildcard entry never leads to a
    private, loopback or metadata address (checked per connection, so rebinding is too)."""

    def __init__(self, hosts: Callable[[], CallbackHosts]) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._hosts = hosts

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        rules, name = self._hosts(), normal_host(host)
        kept = [r for r in found if rules.reachable(name, ipaddress.ip_address(r["host"]))]
        if not kept:
            raise OSError(f"{name} resolves only to addresses callbacks may not reach "
                          "(private, loopback or metadata: list the host exactly to allow it)")
        return kept

    async def close(self) -> None:
        await self._inner.close()


class CallbackSender:
    """Listens for finished messages (queues their callbacks) and delivers the queue."""

    def __init__(self, gateway: Gateway, *, policy: RetryPolicy | None = None,
                 rng: random.Random | None = None, concurrency: int = CONCURRENCY) -> None:
        self._gateway = gateway
        self._queue: CallbackQueue | None = None  # the store is opened when the app starts
        self.policy = policy or RetryPolicy()
        self._rng = rng or random.Random()
        self._concurrency = concurrency
        self.owner = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self.depth = 0  # callbacks in the store, as of the last look (plus those queued since)
        self._queued = False  # one was queued since the last look
        self._full = False  # every slot was taken at the last look

    @property
    def queue(self) -> CallbackQueue:
        """The store's callbacks queue (while running)."""
        if self._queue is None:
            raise RuntimeError("the callback sender is not running")
        return self._queue

    def _hosts(self) -> CallbackHosts:
        return allowed_hosts(self._gateway.runtime.config.server.callback_hosts)

    async def enqueue(self, message_id: str, url: str) -> None:
        """The gateway's listener: queue the callback (one write) and wake the sender."""
        await self.queue.enqueue(message_id, url)
        self._counted(self.depth + 1)
        self._queued = True  # due now: the next look claims without asking first
        self._wake.set()

    def wake(self) -> None:
        """Look at the queue now (tests call it after moving the clock)."""
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """``/status``'s ``callbacks``: queue depth and POSTs in flight."""
        return {"queued": self.depth, "in_flight": len(self._in_flight)}

    def _counted(self, depth: int) -> None:
        self.depth = max(0, depth)
        self._gateway.observer.on_callback_queue(self.depth)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Deliver while the app runs; on the way out, in-flight POSTs are cut and their
        callbacks given back to the queue for the next start."""
        self._queue = CallbackQueue(self._gateway.store.database)
        # Its own pool: a hanging receiver never holds a connection a provider send needs.
        connector = aiohttp.TCPConnector(limit=self._concurrency, limit_per_host=PER_HOST,
                                         ttl_dns_cache=60,
                                         resolver=_GuardedResolver(self._hosts))
        session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), raise_for_status=False,
            headers={"User-Agent": f"sms-gateway/{__version__}"})
        task = asyncio.create_task(self._run(session), name="callback-sender")
        self._gateway.listeners.append(self.enqueue)
        try:
            yield
        finally:
            self._gateway.listeners.remove(self.enqueue)
            task.cancel()
            jobs, flights = list(self._in_flight), list(self._in_flight.values())
            for flight in flights:
                flight.cancel()
            await asyncio.gather(task, *flights, return_exceptions=True)
            try:
                await self.queue.release(jobs)
            except StoreError as exc:  # their leases run out: claimed again all the same
                log.warning("callbacks in flight were not given back: %s", exc)
            await session.close()

    async def _run(self, session: aiohttp.ClientSession) -> None:
        while True:
            self._wake.clear()
            try:
                wait = await self._look(session)
            except StoreError as exc:
                log.warning("callback queue unavailable (tried again shortly): %s", exc)
                wait = POLL
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                    # A burst of sends wakes the sender once per send: one look serves them all.
                    await asyncio.sleep(COALESCE)

    async def _look(self, session: aiohttp.ClientSession) -> float:
        """Start what is due; the seconds until the next look (0: look again now)."""
        free = self._concurrency - len(self._in_flight)
        self._full = free <= 0
        if self._full:
            return POLL  # a callback that finishes wakes the sender
        if not self._queued:  # nothing known to be due: ask the store when something is
            state = await self.queue.state()
            self._counted(state.depth)
            if state.next_due is None:
                return POLL  # a callback queued wakes the sender sooner
            early = state.next_due - self._gateway.wall_clock()
            if early > 0:
                return min(POLL, early)
        self._queued = False
        timeout = self._gateway.runtime.config.server.callback_timeout
        jobs = await self.queue.claim(self.owner, free, lease=timeout + 30.0)
        if not jobs:
            return 0.0  # claimed by another replica: the store says what is next
        try:  # every claimed record in one read, not one read per callback
            records = await self.queue.records([job.message_id for job in jobs])
        except StoreError:
            await self.queue.release([job.id for job in jobs])
            raise
        for job in jobs:
            flight = asyncio.create_task(
                self._deliver(session, job, records.get(job.message_id)), name="callback")
            self._in_flight[job.id] = flight
            flight.add_done_callback(functools.partial(self._finished, job.id))
        return 0.0

    def _finished(self, callback_id: int, _task: asyncio.Task[None]) -> None:
        self._in_flight.pop(callback_id, None)
        if self._full:  # a slot is free for what waits
            self._full = False
            self._wake.set()

    async def _deliver(self, session: aiohttp.ClientSession, job: CallbackJob,
                       record: MessageRecord | None) -> None:
        try:
            error, final = await self._attempt(session, job, record)
            await self._settle(job, error, final)
        except StoreError as exc:  # the lease runs out and the callback is claimed again
            log.warning("callback %d of send %s: the queue could not be updated: %s",
                        job.id, job.message_id, exc)

    async def _attempt(self, session: aiohttp.ClientSession, job: CallbackJob,
                       record: MessageRecord | None) -> tuple[str | None, bool]:
        """POST the record once: (None, True) delivered; (why, final) not."""
        if self._gateway.wall_clock() > job.created_at + self.policy.max_age:
            return "older than the retry window", True
        refused = url_problem(job.url, self._hosts())
        if refused:  # a reload took its host out of callback_hosts
            return f"the URL is no longer allowed: {refused}", True
        if record is None:
            return "the message is no longer retained", True
        server = self._gateway.runtime.config.server
        body = json.dumps(view(record)).encode()
        timestamp = str(int(self._gateway.wall_clock()))
        headers = {"Content-Type": "application/json", TIMESTAMP: timestamp, EVENT: job.event,
                   SIGNATURE: sign(server.callback_secret.reveal(), timestamp, body)}
        try:
            async with session.post(job.url, data=body, headers=headers, allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(
                                        total=server.callback_timeout)) as response:
                status = response.status
        except TimeoutError:
            return f"no answer within {server.callback_timeout:g} s", False
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}", False
        return (None, True) if 200 <= status < 300 else (f"HTTP {status}", False)

    async def _settle(self, job: CallbackJob, error: str | None, final: bool) -> None:
        observer, now = self._gateway.observer, self._gateway.wall_clock()
        if error is None:
            await self.queue.remove(job.id)
            self._counted(self.depth - 1)
            observer.on_callback("delivered")
            log.debug("callback %d of send %s delivered", job.id, job.message_id)
            return
        at = now + self.policy.delay(job.attempts, self._rng)
        if final or at > job.created_at + self.policy.max_age:
            await self.queue.remove(job.id)
            self._counted(self.depth - 1)
            observer.on_callback("gave_up")
            log.warning("callback %d (%s) of send %s to %s given up after %d attempt(s): %s",
                        job.id, job.event, job.message_id, _host(job.url), job.attempts, error)
            return
        await self.queue.retry(job.id, at, error)
        observer.on_callback("retry")
        log.info("callback %d of send %s to %s failed (%s); attempt %d in %.0f s", job.id,
                 job.message_id, _host(job.url), error, job.attempts + 1, at - now)


def _host(url: str) -> str:
    """Where a callback goes, for a log line: the host only (a path may hold a token)."""
    try:
        return URL(url).host or "?"
    except ValueError:
        return "?"
