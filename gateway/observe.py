"""The after-send step: every outcome the gateway produces is reported to one :class:`Observer`.

Answered requests, provider attempts, pool waits, breaker transitions and config reloads all
pass through here, so the metrics (and the one log line a transition earns) have a single home
instead of being counted wherever the outcome happened to be known.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from gateway.breaker import State
from gateway.metrics import Metrics
from gateway.timeline import Timeline

log = logging.getLogger(__name__)


class Observer:
    """Hears every outcome; ``read_breakers`` yields (provider, state) pairs at scrape time."""

    def __init__(self, read_breakers: Callable[[], Iterable[tuple[str, str]]],
                 clock: Callable[[], float] = time.time) -> None:
        self.metrics = Metrics(read_breakers)
        # The labelled children on every send's path, looked up once (labels() takes a lock).
        self._answers: dict[str, Any] = {}
        self._attempts: dict[tuple[str, str], Any] = {}
        self.timeline = Timeline(clock)  # the last hour per provider, for charts and ratios

    def on_request(self, status: int | str) -> None:
        """A send request was answered with ``status`` (or ``"aborted"``: nobody to answer)."""
        key = str(status)
        child = self._answers.get(key)
        if child is None:
            child = self._answers[key] = self.metrics.requests.labels(key)
        child.inc()

    def on_send(self, seconds: float) -> None:
        """A valid send was routed to its outcome in ``seconds``, failovers included."""
        self.metrics.latency.observe(seconds)

    def on_attempt(self, provider: str, outcome: str, seconds: float | None = None) -> None:
        """One provider attempt ended: ``outcome`` as the router names it, or ``not_sent``."""
        child = self._attempts.get((provider, outcome))
        if child is None:
            child = self._attempts[provider, outcome] = self.metrics.attempts.labels(provider,
                                                                                     outcome)
        child.inc()
        self.timeline.attempt(provider, outcome, seconds)

    def on_pool_wait(self, provider: str, seconds: float, granted: bool) -> None:
        """A send queued ``seconds`` for a pooled connection; not ``granted``: it gave up."""
        self.metrics.pool_waits.labels(provider).observe(seconds)
        if not granted:
            self.metrics.pool_timeouts.labels(provider).inc()

    def on_transition(self, name: str, old: State, new: State, reason: str) -> None:
        """A provider's breaker moved; the one place that logs and counts it."""
        log.info("breaker %s: %s -> %s (%s)", name, old.value, new.value, reason)
        self.metrics.transitions.labels(name, new.value).inc()

    def on_reload(self, result: str) -> None:
        """A config reload was ``applied`` or ``rejected``."""
        self.metrics.reloads.labels(result).inc()

    def on_callback(self, outcome: str) -> None:
        """A status callback was ``delivered``, will be tried again (``retry``), or ``gave_up``."""
        self.metrics.callbacks.labels(outcome).inc()

    def on_callback_queue(self, depth: int) -> None:
        """The status callbacks waiting to be delivered, as the sender last saw them."""
        self.metrics.callback_queue.set(depth)

    def on_limited(self, rule: str) -> None:
        """A send was refused by the limit ``rule`` (SPEC §10)."""
        self.metrics.limited.labels(rule).inc()

    def on_receipt(self, provider: str, status: str, seconds: float | None = None) -> None:
        """A delivery receipt: ``delivered``/``undelivered`` (a recipient's first), or what
        else became of it (``duplicate``, ``parked``, ``dropped``, ``invalid``)."""
        self.metrics.receipts.labels(provider, status).inc()
        if status in ("delivered", "undelivered"):
            self.timeline.receipt(provider, status == "delivered", seconds)
            if seconds is not None:
                self.metrics.delivery.labels(provider).observe(seconds)

    def on_outbox(self, depth: int, oldest_seconds: float) -> None:
        """The outbox was counted: ``depth`` messages wait, the oldest for ``oldest_seconds``."""
        self.metrics.outbox_depth.set(depth)
        self.metrics.outbox_oldest.set(oldest_seconds)

    def on_outbox_send(self, result: str) -> None:
        """An outbox send ended: its final status, or ``retry`` (queued again)."""
        self.metrics.outbox_sends.labels(result).inc()
