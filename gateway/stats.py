"""Per-provider counters and latency, for /status and the dashboard."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class ProviderStats:
    """What a person watching a provider wants to know; survives config reloads by name."""

    sent: int = 0
    failed: int = 0
    rejected: int = 0
    unknown: int = 0
    short_circuited: int = 0
    last_error: str = ""
    last_error_at: float | None = None  # wall clock
    last_success_at: float | None = None
    _latencies: deque[float] = field(default_factory=lambda: deque(maxlen=512))

    def observe(self, outcome: str, seconds: float, error: str = "") -> None:
        """Count one attempt (outcome as in the API's ``attempts``)."""
        if outcome == "skipped":
            self.short_circuited += 1
            return
        self._latencies.append(seconds)
        if outcome == "accepted":
            self.sent += 1
            self.last_success_at = time.time()
            return
        if outcome == "rejected":
            self.rejected += 1
        elif outcome == "unknown":
            self.unknown += 1
        else:
            self.failed += 1
        self.last_error = error
        self.last_error_at = time.time()

    def percentile(self, q: float) -> float | None:
        """The q-th quantile (0-1) of recent attempt latencies, in seconds."""
        if not self._latencies:
            return None
        ordered = sorted(self._latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def reset(self) -> None:
        self.sent = self.failed = self.rejected = self.unknown = self.short_circuited = 0
        self.last_error, self.last_error_at, self.last_success_at = "", None, None
        self._latencies.clear()
