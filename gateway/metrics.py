"""Prometheus metrics in a registry per app (no process globals).

Under ``--workers`` the supervisor gives its workers a folder (``PROMETHEUS_MULTIPROC_DIR``,
prometheus_client's multiprocess mode): each worker's values live in files there and a scrape of
any worker reads them all, so counters are the whole gateway's, whichever worker answers (a
scraper would otherwise see one worker's counter, then another's, and compute nonsense rates).
A dead worker's counts stay in the sums; the gauges are those of live workers. The breaker
states are the answering worker's own: breakers are per process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

BREAKER_STATES = ("closed", "open", "half_open", "disabled")
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR"  # set by the --workers supervisor


class _BreakerCollector(Collector):
    """Reads breaker states at scrape time, so sends pay nothing for this gauge."""

    def __init__(self, read: Callable[[], Iterable[tuple[str, str]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "sms_breaker_state", "1 for the breaker's current state, per provider",
            labels=["provider", "state"],
        )
        for provider, current in self._read():
            for state in BREAKER_STATES:
                family.add_metric([provider, state], 1.0 if state == current else 0.0)
        yield family


class Metrics:
    """The gateway's metrics; ``read_breakers`` yields (provider, state) pairs at scrape time."""

    def __init__(self, read_breakers: Callable[[], Iterable[tuple[str, str]]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)  # what /metrics shows
        shared = os.environ.get(MULTIPROCESS)
        # multiprocess: the values are in the shared files; the registry reads those instead
        registry: CollectorRegistry | None = None if shared else self.registry
        if shared:
            MultiProcessCollector(self.registry, path=shared)  # type: ignore[no-untyped-call]
        self.requests = Counter(
            "sms_requests", "Send requests answered, by HTTP status",
            ["status"], registry=registry,
        )
        self.attempts = Counter(
            "sms_attempts", "Provider attempts, by provider and outcome",
            ["provider", "outcome"], registry=registry,
        )
        self.latency = Histogram(
            "sms_send_duration_seconds", "Time to answer a send request, failovers included",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
            registry=registry,
        )
        self.reloads = Counter(
            "sms_config_reloads", "Config reloads, by result", ["result"],
            registry=registry,
        )
        for result in ("applied", "rejected"):  # at 0 from the start: a rate needs a first sample
            self.reloads.labels(result)
        self.transitions = Counter(
            "sms_breaker_transitions", "Breaker state changes, by provider and new state",
            ["provider", "state"], registry=registry,
        )
        self.pool_waits = Histogram(
            "sms_pool_wait_seconds",
            "Time sends queued for a pooled connection to a provider (only sends that queued)",
            ["provider"], buckets=(0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.pool_timeouts = Counter(
            "sms_pool_timeouts", "Sends that gave up queueing for a pooled connection "
            "(server.pool_wait): nothing was sent", ["provider"], registry=registry,
        )
        self.callbacks = Counter(
            "sms_callbacks", "Status callback attempts, by outcome (delivered, retry, gave_up)",
            ["outcome"], registry=registry,
        )
        for outcome in ("delivered", "retry", "gave_up"):
            self.callbacks.labels(outcome)
        # Gauges of the store, the same in every worker: the highest of the live ones
        self.callback_queue = Gauge(
            "sms_callback_queue_depth", "Status callbacks waiting to be delivered",
            registry=registry, multiprocess_mode="livemax",
        )
        self.limited = Counter(
            "sms_limited", "Sends refused by a gateway limit (SPEC §10), by rule "
            "(countries.allow: a destination not allowed)", ["rule"], registry=registry,
        )
        self.receipts = Counter(
            "sms_receipts", "Delivery receipts, by provider and what became of them: delivered, "
            "undelivered (a recipient's first receipt), duplicate, parked (no final record yet), "
            "dropped (parked an hour, never matched), invalid", ["provider", "status"],
            registry=registry,
        )
        self.delivery = Histogram(
            "sms_delivery_seconds", "Time from a send to its recipient's delivery receipt",
            ["provider"], buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=registry,
        )
        self.outbox_depth = Gauge(
            "sms_outbox_depth", "Async messages queued or being sent (the outbox, all processes)",
            registry=registry, multiprocess_mode="livemax")
        self.outbox_oldest = Gauge(
            "sms_outbox_oldest_seconds", "Age of the oldest async message not yet sent",
            registry=registry, multiprocess_mode="livemax")
        self.outbox_sends = Counter(
            "sms_outbox_sends", "Outbox sends by result: a final status, or retry (queued again)",
            ["result"], registry=registry)
        self.registry.register(_BreakerCollector(read_breakers))
