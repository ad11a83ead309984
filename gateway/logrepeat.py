"""Rate-limit identical log lines: a flood (an ``accept`` error per connection attempt) must not
rotate the whole log history away in seconds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Window:
    started: float
    record: logging.LogRecord  # the first of the lines, for the summary's logger and level
    seen: int = 0


class RepeatLimiter:
    """Lets the first ``burst`` identical lines through per ``interval`` seconds, then holds the
    rest back and writes one "repeated K more times" summary when the interval is over.

    Identical means same logger, level and formatted message: different sends' lines differ
    (ids, numbers) and are never held back. At most ``max_keys`` messages are tracked.
    """

    def __init__(self, burst: int = 5, interval: float = 10.0, *, max_keys: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._windows: dict[tuple[str, int, str], _Window] = {}
        self._next_sweep = 0.0

    def admit(self, record: logging.LogRecord) -> list[logging.LogRecord]:
        """The records to write now: summaries that are due, then ``record`` unless held."""
        now = self._clock()
        out = self._sweep(now) if now >= self._next_sweep else []
        try:
            key = (record.name, record.levelno, record.getMessage())
        except Exception:  # a bad format string: let logging report it as it always has
            return [*out, record]
        window = self._windows.get(key)
        if window is not None and now - window.started >= self.interval:
            out.extend(self._summary(self._windows.pop(key)))
            window = None
        if window is None:
            if len(self._windows) >= self.max_keys:
                out.extend(self.drain())
            window = self._windows[key] = _Window(now, record)
        window.seen += 1
        if window.seen <= self.burst:
            out.append(record)
        return out

    def drain(self) -> list[logging.LogRecord]:
        """Every pending summary, forgetting all windows (at stop, or when too many)."""
        out = [s for w in self._windows.values() for s in self._summary(w)]
        self._windows.clear()
        return out

    def _sweep(self, now: float) -> list[logging.LogRecord]:
        self._next_sweep = now + self.interval
        due = [k for k, w in self._windows.items() if now - w.started >= self.interval]
        return [s for k in due for s in self._summary(self._windows.pop(k))]

    def _summary(self, window: _Window) -> list[logging.LogRecord]:
        held = window.seen - self.burst
        if held <= 0:
            return []
        first = window.record
        line = first.getMessage().splitlines()[0][:200]
        return [logging.makeLogRecord({
            "name": first.name, "levelno": first.levelno, "levelname": first.levelname,
            "msg": "last message repeated %d more times in %.0fs (held back): %s",
            "args": (held, self.interval, line),
        })]
