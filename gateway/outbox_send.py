"""One outbox message (SPEC §8): what a worker does with a message it claimed.

It is sent through the same router, breakers and :class:`~gateway.recorder.Recorder` as a sync
send (every attempt written as started before its call), and the router's verdict decides:

- sent, rejected, rate-limited or unknown: the final status, then the listeners are told
  (:meth:`Gateway.announce <gateway.service.Gateway.announce>`, the status callbacks);
- every provider failed, or every provider is open (nothing was sent): back in the queue for a
  backoff of 1 s doubling to 5 min with full jitter, and never before the earliest breaker admits
  a call (so nothing spins while all are open; a provider's Retry-After opens its breaker that
  long). Waiting for open breakers does not grow the backoff. Never later than its ``ttl``.

Before that: a claim holding an attempt that never finished (a crash mid-call) becomes
``unknown``, unless the template says ``on_unknown: failover``; one past its ``ttl`` is
``expired``; one whose template was removed from the config is ``failed``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.config import TemplateConfig
from gateway.observe import Observer
from gateway.phones import normalize
from gateway.recorder import Recorder
from gateway.router import Outcome, Router, Snapshot
from gateway.store import AttemptEnd, NewMessage, Store, StoreError
from gateway.store.outbox import BACKOFF, PROVIDERS_OPEN, Claimed
from providers.base import Message

log = logging.getLogger("gateway.outbox")

MAX_BACKOFF = 300.0
CRASHED = "the gateway stopped before the provider answered; it may have been sent"
_RETRY = frozenset({"failed", "unavailable"})  # nothing was sent: it may be tried again

Announce = Callable[[str, str | None], Awaitable[None]]


def backoff(retries: int, rand: Callable[[], float] = random.random) -> float:
    """Full jitter: a uniform wait up to 1 s doubled ``retries`` times, capped at 5 min."""
    return rand() * min(MAX_BACKOFF, 2.0 ** min(retries, 30))


@dataclass(eq=False)
class OutboxSender:
    """Sends claimed messages for one process's outbox (which owns the leases)."""

    router: Router
    observer: Observer
    store: Store
    snapshot: Callable[[], Snapshot]
    announce: Announce
    owner: str
    wall: Callable[[], float]
    rand: Callable[[], float]
    claiming: Callable[[], bool]  # False once stopping: put back without a backoff
    on_sent: Callable[[], None]

    async def deliver(self, message: Claimed) -> None:
        """Send ``message``; a failure is logged, and its lease, running out, brings it back."""
        try:
            await self._send(message)
        except StoreError as exc:
            log.warning("send %s: the outbox could not record it (tried again later): %s",
                        message.id, exc)
        except Exception:
            log.exception("send %s: the outbox failed unexpectedly (tried again later)",
                          message.id)

    async def expired(self, message_id: str, callback_url: str | None) -> None:
        """The housekeeping pass expired ``message_id``: count, log and tell."""
        self.observer.on_outbox_send("expired")
        log.info("send %s: expired (not sent before its ttl)", message_id)
        await self.announce(message_id, callback_url)

    async def _send(self, claimed: Claimed) -> None:
        snapshot = self.snapshot()
        template = snapshot.config.templates.get(claimed.template)
        if claimed.unfinished is not None:
            crashed = AttemptEnd(claimed.unfinished, "unknown", CRASHED)
            if template is None or template.on_unknown == "stop":
                await self._finish(claimed, "unknown", CRASHED, last=crashed)
                return
            await self.store.records.attempt_finished(claimed.id, claimed.unfinished,
                                                      "unknown", error=CRASHED)
        if claimed.expires_at is not None and self.wall() >= claimed.expires_at:
            await self._finish(claimed, "expired", "not sent before its ttl")
            return
        if template is None:
            await self._finish(claimed, "failed",
                               f"template {claimed.template!r} is no longer configured")
            return
        recorder = Recorder(self.store.records, NewMessage(
            claimed.id, claimed.caller, claimed.template, claimed.numbers, claimed.params,
            mode="async"), keep_params=snapshot.config.storage.keep_params, created=True)
        message = Message(claimed.id, claimed.numbers, claimed.template, claimed.params)
        # Only routes read countries: parsing numbers again is skipped when none names any.
        countries = frozenset(_region(n) for n in claimed.numbers) \
            if any(r.countries for r in snapshot.config.routes) else frozenset()
        outcome = await self.router.send(snapshot, message, template, countries, recorder)
        if outcome.state in _RETRY:
            await self._put_back(claimed, snapshot, template, countries, outcome, recorder)
            return
        await recorder.finish(outcome, _refused(message.to, outcome))
        self._done(claimed, outcome.state, outcome.provider)
        await self.announce(claimed.id, claimed.callback_url)

    async def _finish(self, claimed: Claimed, status: str, error: str,
                      last: AttemptEnd | None = None) -> None:
        keep = self.snapshot().config.storage.keep_params  # applies on reload
        if await self.store.records.finish(claimed.id, status, error=error, last=last,
                                           keep_params=keep):
            self._done(claimed, status, None)
            await self.announce(claimed.id, claimed.callback_url)
        # else another worker (this one's lease was lost) got there first

    def _done(self, claimed: Claimed, status: str, provider: str | None) -> None:
        self.observer.on_outbox_send(status)
        if status == "sent":
            self.on_sent()
        log.info("send %s %s via %s: %s (async)", claimed.id, claimed.template,
                 provider or "-", status)

    async def _put_back(self, claimed: Claimed, snapshot: Snapshot, template: TemplateConfig,
                        countries: frozenset[str], outcome: Outcome, recorder: Recorder) -> None:
        """Nothing was sent: queue it again, after a backoff and once a provider may take it."""
        now = self.wall()
        if not self.claiming():  # stopping: the next start (or another replica) sends it
            await self.store.outbox.put_back(claimed.id, self.owner, now, waiting=BACKOFF,
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
            at = claimed.expires_at  # expired there, by the next housekeeping pass
        waiting = PROVIDERS_OPEN if opened > 0 else BACKOFF
        kept = await self.store.outbox.put_back(claimed.id, self.owner, at, waiting=waiting,
                                                error=outcome.reason, last=recorder.ended,
                                                retried=tried or opened == 0)
        self.observer.on_outbox_send("retry" if kept else "lease_lost")
        log.info("send %s: %s; queued again in %.1fs (%s)", claimed.id, outcome.reason,
                 at - now, waiting)


def _region(number: str) -> str:
    try:
        return normalize(number, "ZZ").region
    except ValueError:  # valid when queued; a newer numbering plan may say otherwise
        return "ZZ"


def _refused(to: tuple[str, ...], outcome: Outcome) -> dict[str, str]:
    """Our number -> the provider's code, for the recipients it refused (matched by digits)."""
    ours = {number.lstrip("+"): number for number in to}
    return {ours[n.lstrip("+")]: code for n, code in outcome.refused if n.lstrip("+") in ours}
