"""The last hour per provider, minute by minute: sends, failures, receipts, latencies.

Memory is fixed: 60 one-minute buckets per provider, each a few counters and two small
histograms (fixed bucket edges), whatever the traffic. Quantiles are read from the histograms,
interpolated within a bucket: what a person reading a chart or a ratio needs, not an exact
order statistic.
"""

from __future__ import annotations

import bisect
import collections
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

MINUTE = 60.0
MINUTES = 60
LATENCY_EDGES: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                                    10.0, 30.0)
DELIVERY_EDGES: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                                     1800.0, 3600.0, 86400.0)
_FAILED = frozenset({"failed", "unknown"})


@dataclass(slots=True)
class Minute:
    """One provider's minute."""

    index: int  # minutes since the epoch
    sends: int = 0  # attempts the provider accepted
    failures: int = 0  # attempts that failed or may have (unknown)
    receipts: int = 0  # first receipts per recipient (duplicates not counted)
    delivered: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_EDGES) + 1))
    delivery: list[int] = field(default_factory=lambda: [0] * (len(DELIVERY_EDGES) + 1))


def quantile(counts: Sequence[int], edges: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of a histogram (``counts[i]`` below ``edges[i]``, the last one above
    every edge), linear within its bucket; None when empty."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            low = edges[i - 1] if i > 0 else 0.0
            high = edges[i] if i < len(edges) else edges[-1] * 2
            return low + (high - low) * max(0.0, rank - seen) / count
        seen += count
    return edges[-1] * 2


class Timeline:
    """Per-provider minutes of the last hour; ``clock`` is wall time (injectable)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._minutes: dict[str, collections.deque[Minute]] = {}

    def _now(self, provider: str) -> Minute:
        index = int(self._clock() // MINUTE)
        minutes = self._minutes.get(provider)
        if minutes is None:
            minutes = self._minutes[provider] = collections.deque(maxlen=MINUTES)
        if not minutes or minutes[-1].index != index:
            minutes.append(Minute(index))
        return minutes[-1]

    def attempt(self, provider: str, outcome: str, seconds: float | None) -> None:
        """One provider attempt (outcomes as the router names them)."""
        if outcome == "accepted":
            minute = self._now(provider)
            minute.sends += 1
        elif outcome in _FAILED:
            minute = self._now(provider)
            minute.failures += 1
        else:
            return
        if seconds is not None:
            minute.latency[bisect.bisect_left(LATENCY_EDGES, seconds)] += 1

    def receipt(self, provider: str, delivered: bool, seconds: float | None) -> None:
        """A recipient's first receipt; ``seconds`` from the send to its delivery."""
        minute = self._now(provider)
        minute.receipts += 1
        if delivered:
            minute.delivered += 1
            if seconds is not None:
                minute.delivery[bisect.bisect_left(DELIVERY_EDGES, seconds)] += 1

    def _hour(self, provider: str) -> list[Minute]:
        oldest = int(self._clock() // MINUTE) - MINUTES + 1
        return [m for m in self._minutes.get(provider, ()) if m.index >= oldest]

    def delivery(self, provider: str) -> dict[str, Any]:
        """The last hour's receipts: counts, the delivery ratio (delivered / receipts) and the
        median time from send to delivery (None without receipts)."""
        minutes = self._hour(provider)
        receipts = sum(m.receipts for m in minutes)
        delivered = sum(m.delivered for m in minutes)
        histogram = [sum(column) for column in zip(*(m.delivery for m in minutes),
                                                    strict=True)] if minutes else []
        median = quantile(histogram, DELIVERY_EDGES, 0.5) if histogram else None
        return {"receipts": receipts, "delivered": delivered,
                "undelivered": receipts - delivered,
                "ratio": round(delivered / receipts, 4) if receipts else None,
                "median_delivery_s": None if median is None else round(median, 2)}

    def series(self, provider: str) -> dict[str, list[float | None]]:
        """Sixty values per chart, oldest minute first (a minute with no data: 0 or None)."""
        now = int(self._clock() // MINUTE)
        by_index = {m.index: m for m in self._hour(provider)}
        out: dict[str, list[float | None]] = {"sends": [], "failures": [], "ratio": [],
                                              "p95_ms": []}
        for index in range(now - MINUTES + 1, now + 1):
            m = by_index.get(index)
            out["sends"].append(m.sends if m else 0)
            out["failures"].append(m.failures if m else 0)
            out["ratio"].append(m.delivered / m.receipts if m and m.receipts else None)
            p95 = quantile(m.latency, LATENCY_EDGES, 0.95) if m else None
            out["p95_ms"].append(None if p95 is None else p95 * 1000)
        return out
