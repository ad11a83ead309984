"""The sending service: what handlers reach through ``app[gateway_key]``.

It owns the runtime (the running config and its providers), records and idempotency, reports
every outcome to its :class:`~gateway.observe.Observer` (which keeps the metrics), and turns a
valid request into a :class:`Reply`. It knows nothing of routes or requests: the
factory (:mod:`gateway.app`) wires it, the handlers (:mod:`gateway.handlers`) translate HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import Config
from gateway.metrics import Metrics
from gateway.observe import Observer
from gateway.phones import mask
from gateway.problems import Problem, problem_body
from gateway.records import CONFLICT, IdempotencyConflict, IdempotencyStore, Records, SendRecord
from gateway.router import Outcome, Router, Snapshot
from gateway.runtime import Runtime
from gateway.validate import SendRequest, parse_send
from providers.base import Message
from providers.wire import Pool

if TYPE_CHECKING:
    from gateway.emulators import EmulatorServer

log = logging.getLogger(__name__)

# A stored answer is replayed only when the send's outcome is final; 429/502/503 sent nothing,
# so a retry with the same key must be free to try again.
_REPLAYABLE = frozenset({200, 202, 422})
_PROBLEM_SLUG = {422: "rejected-by-provider", 429: "recipient-rate-limited",
                 502: "all-providers-failed", 503: "no-provider-available"}


class Gateway:
    """Everything the handlers share; the runtime exists while :meth:`running`."""

    def __init__(self, config: Config, *, config_path: Path | None = None,
                 loader: Callable[[], Config] | None = None,
                 emulators: Mapping[str, EmulatorServer] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.initial_config = config
        self.config_path = config_path
        self.loader = loader
        self.emulators = dict(emulators or {})
        self.clock = clock
        self._runtime: Runtime | None = None
        self._cutoff: asyncio.TimerHandle | None = None
        self.observer = Observer(self._breaker_states)
        self.router = Router(self.observer.on_attempt, clock=clock)
        self.records = Records()
        self.idempotency = IdempotencyStore()
        # One reload at a time: a file change and a SIGHUP together must not apply an older
        # read of the file after a newer one.
        self.reload_lock = asyncio.Lock()
        self.started_at = time.time()

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("the gateway is not started")
        return self._runtime

    @property
    def metrics(self) -> Metrics:
        """What ``/metrics`` serves; only the observer counts (tests/test_imports.py)."""
        return self.observer.metrics

    def _breaker_states(self) -> list[tuple[str, str]]:
        return list(self._runtime.breaker_states()) if self._runtime else []

    def _pool_wait(self) -> float:
        config = self._runtime.config if self._runtime is not None else self.initial_config
        return config.server.pool_wait

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The one ClientSession and the providers built on it, while the app runs."""
        # The pool's size is fixed when the session is made; its wait is read per request.
        pool = Pool(self.initial_config.server.pool_size, self._pool_wait,
                    self.observer.on_pool_wait)
        async with pool.session() as session:
            self._runtime = Runtime(self.initial_config, session, clock=self.clock,
                                    on_transition=self.observer.on_transition)
            try:
                yield
            finally:
                if self._cutoff is not None:
                    self._cutoff.cancel()
                self._runtime = None

    def shutting_down(self) -> None:
        """The server now waits up to ``shutdown_timeout`` for in-flight sends, then drops their
        connections: a moment before that, cut them short so every caller gets an answer."""
        timeout = self.initial_config.server.shutdown_timeout  # the runner's (gateway.cli)
        loop = asyncio.get_running_loop()
        self._cutoff = loop.call_later(max(0.0, timeout - min(0.5, timeout / 2)),
                                       self.router.stop)

    # -- auth --------------------------------------------------------------------------------

    def caller_id(self, given: str) -> str:
        """A stable id of the caller's key ("" when auth is off); Problem 401 when it is wrong.

        ``given`` is the key the request offered, "" for none."""
        keys = self.runtime.config.server.api_keys
        if not keys:
            return ""
        # aiohttp keeps undecodable header bytes as surrogates: give them back, never a 500
        offered = given.encode("utf-8", "surrogateescape")
        matched = b""
        for key in keys:  # no early exit: constant time over all keys
            secret = key.reveal().encode()
            if hmac.compare_digest(offered, secret):
                matched = secret
        if not given or not matched:
            raise Problem(401, "a valid API key is required (Authorization: Bearer KEY)",
                          slug="unauthorized",
                          headers={"WWW-Authenticate": 'Bearer realm="sms-gateway"'})
        # Named by the key itself, not its place in the list: a reload that reorders or
        # removes keys leaves every caller's Idempotency-Keys where they were.
        return "key-" + hashlib.sha256(matched).hexdigest()[:16]

    # -- sending -----------------------------------------------------------------------------

    async def send(self, snapshot: Snapshot, body: Any, caller_id: str,
                   key: str | None) -> Reply:
        """Validate ``body`` and send it; with an Idempotency-Key (``key``, scoped to the
        caller), the same body again is answered by replaying the first reply."""
        if key is None:
            return await self.dispatch(snapshot, parse_send(body, snapshot.config))
        scoped = f"{caller_id}\0{key}"
        raw = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        try:
            stored = self.idempotency.lookup(scoped, raw)  # the very same body: replay it
            if stored is None:
                send = parse_send(body, snapshot.config)
                stored = self.idempotency.begin(scoped, send.fingerprint(), raw)
        except IdempotencyConflict as exc:
            raise Problem(409, exc.reason, slug="idempotency-conflict") from None
        except Problem:  # the body is invalid
            if scoped in self.idempotency:  # and the key is taken by another one
                raise Problem(409, CONFLICT, slug="idempotency-conflict") from None
            raise  # nothing was sent: the key stays free, as after a 502 or 503
        if stored is not None:
            return Reply(*stored, replayed=True)
        try:
            reply = await self.dispatch(snapshot, send)
        except BaseException:
            self.idempotency.forget(scoped)
            raise
        if reply.status in _REPLAYABLE:
            self.idempotency.finish(scoped, reply.status, reply.body)
        else:
            self.idempotency.forget(scoped)
        return reply

    async def dispatch(self, snapshot: Snapshot, send: SendRequest) -> Reply:
        """Route one valid request and turn the outcome into the API's response."""
        started = self.clock()
        message = Message(uuid.uuid4().hex, tuple(n.e164 for n in send.numbers),
                          send.template.name, send.params)
        record = SendRecord.start(message.id, message.template, list(message.to))
        self.records.add(record)
        outcome = await self.router.send(snapshot, message, send.template, send.countries)
        record.status, record.http_status = outcome.state, outcome.status
        record.provider, record.provider_message_id = outcome.provider, outcome.provider_message_id
        record.attempts = [a.as_dict() for a in outcome.attempts]
        refused = _refused(message.to, outcome.refused)
        record.refused = [{"index": i, "to": mask(n), "error": code} for i, n, code in refused]
        self.observer.on_send(self.clock() - started)
        log.info("send %s %s via %s: %s", message.id, message.template,
                 outcome.provider or "-", outcome.state)
        if refused:
            log.warning("send %s: %s refused %d of %d recipients: %s", message.id,
                        outcome.provider, len(refused), len(message.to),
                        ", ".join(f"{mask(n)} {code}" for _, n, code in refused))
        return _reply(message, outcome, record.attempts, refused)


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
