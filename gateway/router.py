"""Failover: try providers by route, priority and weight, each behind its breaker.

The rules that keep a message from being lost or sent twice live here:
- a caller fault (422) or per-recipient limit (429) stops at once and never fails over;
- an unknown outcome (maybe sent) stops unless the template says ``on_unknown: failover``;
- a 502 therefore always means no provider could have sent the message.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from gateway.breaker import CircuitBreaker
from gateway.config import Config, ProviderConfig, TemplateConfig
from gateway.stats import ProviderStats
from providers.base import Delivery, Health, Message, Provider, SendResult
from providers.http import MAX_RETRY_AFTER
from providers.wire import Wire, guarded

log = logging.getLogger(__name__)

PROBE_GRACE = 1.0  # seconds a half-open probe keeps its slot after its attempt's timeout


@dataclass(eq=False, slots=True)
class Member:
    """A provider in the running config, with the breaker and stats that outlive reloads."""

    config: ProviderConfig
    provider: Provider
    breaker: CircuitBreaker
    stats: ProviderStats

    @property
    def name(self) -> str:
        return self.config.name


_Usable = tuple[Mapping[str, Member], tuple[tuple[Member, ...], ...]]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One loaded config and its providers; in-flight sends keep the snapshot they began with."""

    config: Config
    members: tuple[Member, ...]  # priority order; ties keep config order
    # template -> (enabled members that can map it by name, those grouped by priority): the
    # same for every send of the template until the next reload, so worked out once, here.
    _usable: Mapping[str, _Usable] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        usable = {name: self._work_out(name) for name in self.config.templates}
        object.__setattr__(self, "_usable", MappingProxyType(usable))  # frozen: set once

    def plan(self, template: str, countries: frozenset[str],
             rand: Callable[[], float] = random.random) -> list[Member]:
        """Providers to try, in order: the first matching route, else all by priority+weight."""
        usable, groups = self._for(template)
        for route in self.config.routes:
            if route.matches(template, countries):
                return [usable[n] for n in route.providers if n in usable]
        ordered: list[Member] = []
        for group in groups:
            if len(group) == 1:
                ordered.append(group[0])
            else:
                ordered.extend(sorted(group, key=lambda m: _weighted_key(m.config.weight, rand)))
        return ordered

    def _for(self, template: str) -> _Usable:
        found = self._usable.get(template)
        return found if found is not None else self._work_out(template)  # not a config name

    def _work_out(self, template: str) -> _Usable:
        usable = {m.name: m for m in self.members
                  if m.config.enabled and m.config.cls.can_map(m.config.settings, template)}
        priorities = sorted({m.config.priority for m in usable.values()})
        groups = tuple(tuple(m for m in usable.values() if m.config.priority == priority)
                       for priority in priorities)
        return MappingProxyType(usable), groups


def _weighted_key(weight: float, rand: Callable[[], float]) -> float:
    """Efraimidis-Spirakis: sorting by -u**(1/w) is a weighted random permutation."""
    if weight <= 0:
        return 1.0  # weight 0: only after every weighted peer
    return -math.pow(rand(), 1.0 / weight)


@dataclass(slots=True)
class Attempt:
    """One provider tried (or skipped) for a message."""

    provider: str
    outcome: str  # accepted | failed | rejected | unknown | skipped
    error: str = ""
    duration_ms: float = 0.0
    sent: bool = True  # False: failed before the request left the gateway (our fault)

    def as_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "outcome": self.outcome,
                "error": self.error or None, "duration_ms": round(self.duration_ms, 1)}


class Journal(Protocol):
    """Told of each provider call: ``before`` it (raising means: do not call), ``after`` it."""

    async def before(self, provider: str) -> None: ...

    def after(self, attempt: Attempt) -> None: ...


@dataclass(slots=True)
class Outcome:
    """What the router concluded, ready to become a response."""

    status: int
    state: str  # sent | unknown | rejected | rate_limited | failed | unavailable
    attempts: list[Attempt] = field(default_factory=list)
    provider: str | None = None
    provider_message_id: str | None = None
    reason: str = ""
    retry_after: float | None = None
    refused: tuple[tuple[str, str], ...] = ()  # see SendResult.refused
    recipient_ids: tuple[tuple[str, str], ...] = ()  # see SendResult.recipient_ids


_OUTCOME = {Delivery.ACCEPTED: "accepted", Delivery.SAFE: "failed", Delivery.CALLER: "rejected",
            Delivery.RCPT_LIMIT: "rejected", Delivery.UNKNOWN: "unknown",
            Delivery.NOT_SENT: "failed"}


def _seconds(retry_after: float | None) -> float | None:
    """A provider's back-off as a usable number: nan dropped, inf capped (custom providers too)."""
    if retry_after is None or not retry_after > 0:
        return None
    return min(retry_after, MAX_RETRY_AFTER)


class Router:
    """Sends one message through a snapshot's providers."""

    def __init__(
        self,
        on_attempt: Callable[[str, str, float], None] = lambda provider, outcome, seconds: None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._on_attempt = on_attempt
        self._clock = clock
        self._rand = rand
        self._stopping = False
        self._waiting: set[asyncio.Task[Any]] = set()  # tasks awaiting a provider's answer
        self._cut: set[asyncio.Task[Any]] = set()  # those ``stop`` cancelled

    def stop(self) -> None:
        """Cut every provider attempt short and start no more, so that each caller is answered
        (202 unknown if its request left, else 503) before the server drops its connection."""
        self._stopping = True
        for task in self._waiting - self._cut:
            self._cut.add(task)
            task.cancel()

    async def send(self, snapshot: Snapshot, message: Message, template: TemplateConfig,
                   countries: frozenset[str], journal: Journal | None = None) -> Outcome:
        deadline = self._clock() + snapshot.config.deadline
        plan = snapshot.plan(message.template, countries, self._rand)
        attempts: list[Attempt] = []
        for member in plan:
            remaining = deadline - self._clock()
            if self._stopping:
                attempts.append(self._skip(member, "the gateway is stopping"))
                continue
            if remaining <= 0:
                attempts.append(self._skip(member, "request deadline exceeded"))
                continue
            timeout = min(member.config.timeout, remaining)
            # A timed-out attempt reports a moment after ``timeout`` (plus any wait for a pooled
            # connection): the grace keeps a probe's slot (and its verdict) until then; only a
            # provider that ignores its timeout loses the slot.
            permit = member.breaker.acquire(timeout + snapshot.config.server.pool_wait
                                            + PROBE_GRACE)
            if permit is None:
                attempts.append(self._skip(member, f"circuit {member.breaker.state.value}"))
                continue
            try:
                if journal is not None:  # the attempt is recorded before the call, or not made
                    await journal.before(member.name)
                started = self._clock()
                result, error = await self._call(member, message, timeout)
            except BaseException:
                # The caller went away, or the store: either says nothing of the provider.
                member.breaker.release(permit)
                raise
            member.breaker.record(permit, result.health, _seconds(result.retry_after))
            attempt = Attempt(member.name, _OUTCOME[result.delivery], result.reason,
                              (self._clock() - started) * 1000,
                              sent=result.delivery is not Delivery.NOT_SENT)
            self._observe(member, attempt, error)
            attempts.append(attempt)
            if journal is not None:
                journal.after(attempt)
            final = self._conclude(member, result, template, attempts)
            if final is not None:
                return final
        return self._exhausted(plan, attempts)

    async def _call(self, member: Member, message: Message,
                    timeout: float) -> tuple[SendResult, Exception | None]:
        """One provider attempt; a provider bug must not lose the message: an exception
        becomes an outcome, and so does being cut short by ``stop``."""
        wire = Wire(member.name)
        task = asyncio.current_task()
        assert task is not None
        self._waiting.add(task)
        try:
            return await guarded(wire, member.provider.send(message, timeout))
        except asyncio.CancelledError:
            if task not in self._cut or task.uncancel() > 0:
                raise  # the caller went away (or more than our own cancel)
            if wire.left:
                return SendResult(Delivery.UNKNOWN, Health.IGNORED,
                                  "the gateway stopped before the provider answered"), None
            return SendResult.not_sent("the gateway is stopping"), None
        finally:
            self._waiting.discard(task)
            self._cut.discard(task)

    def _skip(self, member: Member, why: str) -> Attempt:
        attempt = Attempt(member.name, "skipped", why)
        self._observe(member, attempt)
        return attempt

    def _observe(self, member: Member, attempt: Attempt, error: Exception | None = None) -> None:
        """Count and log an attempt, once: with the traceback when the provider raised."""
        if attempt.sent:  # what never reached the provider says nothing about it
            member.stats.observe(attempt.outcome, attempt.duration_ms / 1000, attempt.error)
        self._on_attempt(member.name, attempt.outcome if attempt.sent else "not_sent",
                         attempt.duration_ms / 1000)
        if error is not None:
            log.error("provider %s %s: %s", member.name, attempt.outcome, attempt.error,
                      exc_info=error)
        elif attempt.outcome in ("failed", "unknown"):
            log.warning("provider %s %s: %s", member.name, attempt.outcome, attempt.error)

    def _conclude(self, member: Member, result: SendResult, template: TemplateConfig,
                  attempts: list[Attempt]) -> Outcome | None:
        """The final outcome after this attempt, or None to try the next provider."""
        delivery = result.delivery
        if delivery is Delivery.ACCEPTED:
            return Outcome(200, "sent", attempts, member.name, result.provider_message_id,
                           refused=result.refused, recipient_ids=result.recipient_ids)
        if delivery is Delivery.CALLER:
            return Outcome(422, "rejected", attempts, member.name, reason=result.reason)
        if delivery is Delivery.RCPT_LIMIT:
            return Outcome(429, "rate_limited", attempts, member.name, reason=result.reason,
                           retry_after=_seconds(result.retry_after) or 60.0)
        if delivery is Delivery.UNKNOWN and template.on_unknown == "stop":
            return Outcome(202, "unknown", attempts, member.name, reason=result.reason)
        return None

    def _exhausted(self, plan: list[Member], attempts: list[Attempt]) -> Outcome:
        """Every provider was tried or skipped and none accepted."""
        unknown = [a for a in attempts if a.outcome == "unknown"]
        if unknown:  # on_unknown: failover, and one of them may have sent it
            return Outcome(202, "unknown", attempts, unknown[-1].provider,
                           reason=unknown[-1].error)
        if self._stopping:
            return Outcome(503, "unavailable", attempts, retry_after=1.0,
                           reason="the gateway is stopping; nothing was sent")
        if any(a.outcome == "failed" and a.sent for a in attempts):
            return Outcome(502, "failed", attempts, reason="every provider tried failed")
        if any(a.outcome == "failed" for a in attempts):  # none of them left the gateway
            return Outcome(503, "unavailable", attempts, retry_after=1.0,
                           reason="the gateway could not send it now; nothing was sent")
        waits = [m.breaker.retry_in() for m in plan]
        retry = max(1.0, math.ceil(min(waits))) if waits else 60.0
        why = "every provider is open or disabled" if plan else "no enabled provider can send it"
        return Outcome(503, "unavailable", attempts, reason=why, retry_after=retry)
