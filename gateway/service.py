"""The sending service: what handlers reach through ``app[gateway_key]``.

It owns the runtime (the running config and its providers) and the message store (records and
idempotency keys, :mod:`gateway.store`), reports
every outcome to its :class:`~gateway.observe.Observer` (which keeps the metrics), and turns a
valid request into a :class:`Reply`. It knows nothing of routes or requests: the
factory (:mod:`gateway.app`) wires it, the handlers (:mod:`gateway.handlers`) translate HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import storage as storage_
from gateway.breaker import State
from gateway.cluster import Cluster
from gateway.config import Config
from gateway.latewrites import LateWrites
from gateway.limiter import Limiter
from gateway.metrics import Metrics
from gateway.observe import Observer
from gateway.outbox import Outbox
from gateway.phones import mask
from gateway.problems import Problem, problem_body
from gateway.recorder import Recorder
from gateway.records import answer
from gateway.rights import OPEN, Caller
from gateway.router import Outcome, Router, Snapshot
from gateway.runtime import Runtime
from gateway.storage import available, available_now, unavailable
from gateway.store import (
    Claim,
    KeyConflict,
    ListQuery,
    MessageRecord,
    NewMessage,
    Page,
    Recovered,
    Replay,
    Store,
    StoreError,
    body_hash,
    open_store,
)
from gateway.validate import SendRequest, parse_send
from providers.base import Message
from providers.wire import Pool

if TYPE_CHECKING:
    from gateway.emulators import EmulatorServer

log = logging.getLogger(__name__)

# A stored answer is replayed only when the send's outcome is final; 429/502/503 sent nothing,
# so a retry with the same key must be free to try again.
_REPLAYABLE = frozenset({200, 202, 422})
CONFLICT = "this Idempotency-Key was used with a different request body"
IN_FLIGHT = "a request with this Idempotency-Key is still in flight"
_PROBLEM_SLUG = {422: "rejected-by-provider", 429: "recipient-rate-limited",
                 502: "all-providers-failed", 503: "no-provider-available"}


class Gateway:
    """Everything the handlers share; the runtime exists while :meth:`running`."""

    def __init__(self, config: Config, *, config_path: Path | None = None,
                 loader: Callable[[], Config] | None = None,
                 emulators: Mapping[str, EmulatorServer] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.initial_config = config
        self.wall_clock = wall_clock  # the store's: record times, key expiry, retention
        self.config_path = config_path
        self.loader = loader
        self.emulators = dict(emulators or {})
        self.clock = clock
        self._runtime: Runtime | None = None
        self._cutoff: asyncio.TimerHandle | None = None
        self.observer = Observer(self._breaker_states, wall_clock)
        self.router = Router(self.observer.on_attempt, clock=clock)
        self.limiter = Limiter(self.observer)  # SPEC §10; its counts are in the store
        self._store: Store | None = None
        self._keeper: storage_.DisabledKeeper | None = None
        # One reload at a time: a file change and a SIGHUP together must not apply an older
        # read of the file after a newer one.
        self.reload_lock = asyncio.Lock()
        self.started_at = time.time()
        # Told when a message's sending is over or a receipt moves it (SPEC §8 callbacks).
        self.listeners: list[Listener] = []
        self.late = LateWrites()  # finished sends' writes, kept while the store is away
        self.cluster: Cluster | None = None  # heartbeats and shared provider state (§11)
        # Async sends (SPEC §8): queued by dispatch, sent by the outbox's workers.
        self.outbox = Outbox(self.router, self.observer, wall_clock=wall_clock)
        self._stop_by: float | None = None  # loop time by which the outbox must have stopped

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("the gateway is not started")
        return self._runtime

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the gateway is not started")
        return self._store

    @property
    def metrics(self) -> Metrics:
        """What ``/metrics`` serves; only the observer counts (tests/test_imports.py)."""
        return self.observer.metrics

    def _breaker_states(self) -> list[tuple[str, str]]:
        return list(self._runtime.breaker_states()) if self._runtime else []

    def _limits_horizon(self) -> float:
        config = self._runtime.config if self._runtime is not None else self.initial_config
        return config.limits.horizon

    def _pool_wait(self) -> float:
        config = self._runtime.config if self._runtime is not None else self.initial_config
        return config.server.pool_wait

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The store (migrated; a StoreError if it cannot be used), its retention sweep, and
        the one ClientSession and the providers built on it, while the app runs."""
        storage = self.initial_config.storage  # read at start: a reload does not move it
        storage_.make_default_folder(storage)
        # wait: a PostgreSQL server that does not answer yet leaves the store down (503s), not
        # the gateway unstarted (SPEC §11)
        self._store = await open_store(storage.url, base=storage.base, clock=self.wall_clock,
                                       idempotency_ttl=storage.idempotency_ttl, wait=True)
        self._store.health.listeners.append(self.late.store_back)
        self.cluster = Cluster(self._store, lambda: self._runtime, wall_clock=self.wall_clock)
        sweeper = asyncio.create_task(storage_.sweeping(self._store, storage.retention,
                                                        self._limits_horizon))
        # The pool's size is fixed when the session is made; its wait is read per request.
        pool = Pool(self.initial_config.server.pool_size, self._pool_wait,
                    self.observer.on_pool_wait)
        try:
            async with pool.session() as session:
                self._runtime = Runtime(self.initial_config, session, clock=self.clock,
                                        on_transition=self._transition)
                await storage_.restore_forced(self._store, self._runtime, self.wall_clock())
                self._keeper = storage_.DisabledKeeper(self._store, self._runtime, self.clock,
                                                       self.wall_clock)
                settler = asyncio.create_task(storage_.settling(
                    self._store, lambda: self.runtime.config, self.announce))
                cluster = asyncio.create_task(self.cluster.run(), name="cluster")
                self.outbox.start(self._store, lambda: self.runtime.snapshot, storage,
                                  self.announce)
                try:
                    yield
                finally:
                    await self.outbox.stop(self._outbox_time_left())
                    for task in (settler, cluster):
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                    if self._cutoff is not None:
                        self._cutoff.cancel()
                    await self._keeper.drain()
                    self._keeper = None
                    self._runtime = None
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await self.late.close()
            await self._store.close()  # what is queued is written first
            self._store = None

    def _transition(self, name: str, old: State, new: State, reason: str) -> None:
        self.observer.on_transition(name, old, new, reason)
        if self._keeper is not None:  # an account-level "disabled" is kept across restarts
            self._keeper.moved(name, old, new, reason)

    async def keep_forced(self, name: str, forced: bool) -> None:
        """Remember an operator's force-open (or its end) for the next start."""
        await storage_.keep_forced(self.store, name, forced)

    def shutting_down(self) -> None:
        """The server now waits up to ``shutdown_timeout`` for in-flight sends, then drops their
        connections: a moment before that, cut them short so every caller gets an answer."""
        timeout = self.initial_config.server.shutdown_timeout  # the runner's (gateway.cli)
        loop = asyncio.get_running_loop()
        self._cutoff = loop.call_later(max(0.0, timeout - min(0.5, timeout / 2)),
                                       self.router.stop)
        self.outbox.stop_claiming()
        self._stop_by = loop.time() + timeout

    def _outbox_time_left(self) -> float:
        """What is left of ``shutdown_timeout`` for the outbox's in-flight sends."""
        if self._stop_by is None:  # stopped without a shutdown (tests): no waiting
            return 0.0
        return self._stop_by - asyncio.get_running_loop().time()

    # -- auth --------------------------------------------------------------------------------

    def caller(self, given: str) -> Caller:
        """Who offers the key ``given`` ("" for none), and what it may do; Problem 401 when
        auth is on and the key is missing or wrong."""
        keys = self.runtime.config.server.api_keys
        if not keys:
            return OPEN
        # aiohttp keeps undecodable header bytes as surrogates: give them back, never a 500
        offered = given.encode("utf-8", "surrogateescape")
        matched = None
        for key in keys:  # no early exit: constant time over all keys
            if hmac.compare_digest(offered, key.reveal().encode()):
                matched = key
        if not given or matched is None:
            raise Problem(401, "a valid API key is required (Authorization: Bearer KEY)",
                          slug="unauthorized",
                          headers={"WWW-Authenticate": 'Bearer realm="sms-gateway"'})
        return Caller(matched.caller_id, matched.rights)

    # -- sending -----------------------------------------------------------------------------

    async def send(self, snapshot: Snapshot, body: Any, caller_id: str,
                   key: str | None) -> Reply:
        """Validate ``body`` and send it; with an Idempotency-Key (``key``, scoped to the
        caller), the same body again is answered by replaying the first reply, also after a
        restart: the claim is a row in the store, taken before the body is even validated."""
        if key is None:
            return await self.dispatch(snapshot, parse_send(body, snapshot.config), caller_id)
        keys = self.store.idempotency
        fingerprint = body_hash(json.dumps(body, sort_keys=True).encode())
        claim = await self._claim(snapshot, caller_id, key, fingerprint)
        if isinstance(claim, Reply):
            return claim
        if isinstance(claim, Replay):
            return Reply(claim.status_code, claim.response, replayed=True)
        if isinstance(claim, KeyConflict):
            reason = CONFLICT if claim.reason == "different_body" else IN_FLIGHT
            raise Problem(409, reason, slug="idempotency-conflict")
        try:
            reply = await self.dispatch(snapshot, parse_send(body, snapshot.config), caller_id,
                                        key)
        except BaseException:
            await self._release(caller_id, key)  # nothing was sent: a retry may send
            raise
        if reply.status not in _REPLAYABLE:
            await self._release(caller_id, key)
            return reply
        try:
            await keys.complete(caller_id, key, reply.status, reply.body, reply.body.get("id"))
        except StoreError as exc:  # sent all the same: the caller gets its answer
            log.error("send %s: its Idempotency-Key is kept when the store is back: %s",
                      reply.body.get("id"), exc)
            self.late.keep(f"send {reply.body.get('id')} key", functools.partial(
                keys.complete, caller_id, key, reply.status, reply.body, reply.body.get("id")))
        return reply

    async def _claim(self, snapshot: Snapshot, caller_id: str, key: str,
                     fingerprint: str) -> Claim | Reply:
        """The key's claim; a claim a crash left in flight is settled from its record."""
        keys, bound = self.store.idempotency, storage_.in_flight_bound(snapshot.config)
        claim = await available(keys.claim(caller_id, key, fingerprint, stale_after=bound))
        if not isinstance(claim, Recovered):
            return claim
        keep = snapshot.config.storage.keep_params
        await storage_.tell(await available(self.store.settle([claim.message_id],
                                                              keep_params=keep)), self.announce)
        record = await available(self.store.records.get(claim.message_id))
        if record is not None and record.status not in ("failed", "rate_limited", "expired"):
            status, body = answer(record)
            log.warning("send %s: its Idempotency-Key was left in flight by a restart; "
                        "answered from its record (%s)", record.id, record.status)
            if status in _REPLAYABLE:
                with contextlib.suppress(StoreError):
                    await keys.complete(caller_id, key, status, body, record.id)
            return Reply(status, body, replayed=True)
        # Nothing was sent (no provider called, or it failed): the key is free for this request.
        claim = await available(keys.claim(caller_id, key, fingerprint, stale_after=bound))
        return KeyConflict("in_flight") if isinstance(claim, Recovered) else claim

    async def _release(self, caller_id: str, key: str) -> None:
        try:
            await self.store.idempotency.release(caller_id, key)
        except StoreError as exc:
            log.warning("an Idempotency-Key is freed when the store is back: %s", exc)
            self.late.keep("a key's release", functools.partial(
                self.store.idempotency.release, caller_id, key))

    async def dispatch(self, snapshot: Snapshot, send: SendRequest, caller_id: str = "",
                       key: str | None = None) -> Reply:
        """Route one valid request, recording it, and turn the outcome into the response."""
        started = self.clock()
        available_now(self.store)
        message = Message(uuid.uuid4().hex, tuple(n.e164 for n in send.numbers),
                          send.template.name, send.params)
        # Limits: counted before any provider is called, or the request is refused (422/429);
        # an async send counts at intake (it is admitted to be sent)
        admitted = await self.limiter.admit(self.store, snapshot.config, send, message.id,
                                            caller_id, key)
        if send.mode == "async":
            try:
                return await self.queue(message, send, caller_id, key)
            except Problem:  # not queued (the store is away): nothing will be sent
                await self.limiter.refund(self.store, admitted)
                raise
        recorder = Recorder(self.store.records, NewMessage(
            message.id, caller_id, message.template, message.to, dict(send.params),
            callback_url=send.callback_url, idempotency_key=key),
            keep_params=snapshot.config.storage.keep_params)
        outcome = await available(
            self.router.send(snapshot, message, send.template, send.countries, recorder))
        if not recorder.called:  # nothing can have been sent: it does not count
            await self.limiter.refund(self.store, admitted)
        refused = _refused(message.to, outcome.refused)
        finish = functools.partial(recorder.finish, outcome,
                                   {n: code for i, n, code in refused if i >= 0})
        try:
            await finish()
        except StoreError as exc:
            if not recorder.called:  # nothing was sent: nothing unrecorded goes out
                raise unavailable() from None
            log.error("send %s: its final status is recorded when the store is back: %s",
                      message.id, exc)
            self.late.keep(f"send {message.id}", finish)
        else:
            await self.announce(message.id, send.callback_url)  # queued, not sent, here
        attempts = [a.as_dict() for a in outcome.attempts]
        self.observer.on_send(self.clock() - started)
        log.info("send %s %s via %s: %s", message.id, message.template,
                 outcome.provider or "-", outcome.state)
        if refused:
            log.warning("send %s: %s refused %d of %d recipients: %s", message.id,
                        outcome.provider, len(refused), len(message.to),
                        ", ".join(f"{mask(n)} {code}" for _, n, code in refused))
        return _reply(message, outcome, attempts, refused)

    async def queue(self, message: Message, send: SendRequest, caller_id: str,
                    key: str | None) -> Reply:
        """An async send: written as queued for the outbox, answered 202 once durable."""
        expires_at = self.wall_clock() + send.ttl
        await available(self.outbox.enqueue(NewMessage(
            message.id, caller_id, message.template, message.to, dict(send.params),
            mode="async", expires_at=expires_at, idempotency_key=key,
            callback_url=send.callback_url)))
        log.info("send %s %s: queued (async)", message.id, message.template)
        return Reply(202, {"id": message.id, "status": "queued", "mode": "async",
                           "to": list(message.to), "expires_at": expires_at,
                           "message": "queued"})

    async def announce(self, message_id: str, callback_url: str | None) -> None:
        """A message's sending is over, or a receipt moved it: tell the listeners (the status
        callbacks). Only messages with a ``callback_url`` have anyone to tell; a listener's
        trouble is logged, never a send's failure."""
        if callback_url is None:
            return
        for listener in self.listeners:
            try:
                await listener(message_id, callback_url)
            except Exception:  # the send is done whatever a listener does
                log.exception("send %s: a listener failed", message_id)

    # -- reading records ---------------------------------------------------------------------

    async def record(self, message_id: str, caller: Caller) -> MessageRecord | None:
        """One record, if this caller may read it (its own only, unless ``read_all``)."""
        found = await available(self.store.records.get(message_id))
        if found is None or (not caller.may("read_all") and found.caller != caller.id):
            return None
        return found

    async def records(self, query: ListQuery) -> Page:
        """A page of records; BadQueryError naming a filter the store cannot use."""
        return await available(self.store.records.list(query))


Listener = Callable[[str, str], Awaitable[None]]  # (message id, callback url)


@dataclass(frozen=True, slots=True)
class Reply:
    """A send's answer, kept as data so an Idempotency-Key repeat can replay it."""

    status: int
    body: dict[str, Any]
    retry_after: float | None = None
    replayed: bool = False  # the answer stored for an Idempotency-Key, given again


def _refused(to: tuple[str, ...],
             refused: tuple[tuple[str, str], ...]) -> list[tuple[int, str, str]]:
    """(index in ``to``, number, code) per refused recipient, matched by digits: a provider may
    write our ``+8613900099915`` as ``8613900099915``. One it names that we did not send to
    (it should not) keeps its own spelling, with index -1."""
    ours = {number.lstrip("+"): index for index, number in enumerate(to)}
    out = []
    for number, code in refused:
        index = ours.get(number.lstrip("+"), -1)
        out.append((index, to[index] if index >= 0 else number, code))
    return out


def _reply(message: Message, outcome: Outcome, attempts: list[dict[str, Any]],
           refused: list[tuple[int, str, str]]) -> Reply:
    if outcome.status in (200, 202):
        return Reply(outcome.status, {
            "id": message.id, "status": outcome.state, "provider": outcome.provider,
            "provider_message_id": outcome.provider_message_id, "to": list(message.to),
            "attempts": attempts, "message": "send",
            # only when a provider sent the batch to some recipients and refused the others
            **({"refused": [{"to": n, "error": code} for _, n, code in refused]}
               if refused else {}),
        })
    detail = outcome.reason
    if outcome.status == 422:
        detail = f"{outcome.provider} rejected the message as the caller's fault: {detail}"
    elif outcome.status == 429:
        detail = f"{outcome.provider} limits messages to this recipient: {detail}"
    body = problem_body(outcome.status, detail, _PROBLEM_SLUG.get(outcome.status),
                        id=message.id, attempts=attempts)
    return Reply(outcome.status, body, outcome.retry_after)
