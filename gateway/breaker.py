"""A per-provider circuit breaker for asyncio (SPEC section 5).

Calls ask for a :class:`Permit` and report back with it. Every state change bumps a generation,
and a permit from an older generation is ignored when it reports (gobreaker's trick): a burst of
failures in flight when the breaker opens cannot re-open it or log twice. Half-open admits
exactly ``half_open_probes`` permits at once; a probe that outlives its timeout frees its slot,
and a cancelled call is released without counting (Polly's rule).

Reads are pure: ``state``, ``retry_in`` and ``open_until`` never change anything, so /status,
/metrics and the dashboard's poll cannot cause a transition. An open period that has run out
becomes half-open in ``acquire``, when a call actually asks (resilience4j's rule).
"""

from __future__ import annotations

import enum
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import BreakerSettings
from providers.base import Health

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Transition = Callable[[str, "State", "State", str], None]


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    DISABLED = "disabled"


@dataclass(slots=True, eq=False)
class Permit:
    """One admitted call; hand it back to ``record`` or ``release``."""

    generation: int
    probe: bool = False
    expires: float = math.inf


class _Window:
    """Calls and failures over the last ``window`` seconds, in ten buckets."""

    __slots__ = ("_buckets", "_width")

    def __init__(self, window: float) -> None:
        self._width = window / 10
        self._buckets: dict[int, list[int]] = {}

    def add(self, now: float, failed: bool) -> None:
        index = int(now // self._width)
        bucket = self._buckets.get(index)
        if bucket is None:
            self._expire(index)
            bucket = self._buckets[index] = [0, 0]
        bucket[0] += 1
        bucket[1] += failed

    def totals(self, now: float) -> tuple[int, int]:
        self._expire(int(now // self._width))
        calls = sum(b[0] for b in self._buckets.values())
        return calls, sum(b[1] for b in self._buckets.values())

    def _expire(self, index: int) -> None:
        for old in [i for i in self._buckets if i <= index - 10]:
            del self._buckets[old]

    def clear(self) -> None:
        self._buckets.clear()


class CircuitBreaker:
    """closed -> open (timed, growing, jittered) -> half_open -> closed; plus disabled."""

    def __init__(
        self,
        name: str,
        settings: BreakerSettings,
        *,
        clock: Clock = time.monotonic,
        rand: Callable[[], float] = random.random,
        on_transition: Transition | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._clock = clock
        self._rand = rand
        self._on_transition = on_transition
        self._state = State.CLOSED
        self._generation = 0
        self._until = 0.0  # when OPEN/DISABLED ends (clock time)
        self._forced = False
        self._level = 0  # re-opens since the last close: the open time doubles per level
        self._consecutive = 0
        self._window = _Window(settings.window)
        self._probes: list[Permit] = []
        self._probe_successes = 0
        self.reason = ""  # why it is not closed

    # -- reading -----------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The current state; an expired open period still reads as open until a call asks."""
        return self._state

    @property
    def forced(self) -> bool:
        return self._forced

    def retry_in(self) -> float:
        """Seconds until a call may be admitted again (0 when one may be now)."""
        state = self._state
        if state in (State.CLOSED, State.HALF_OPEN):
            return 0.0
        if self._forced:
            return self.settings.max_open_for
        return max(0.0, self._until - self._clock())

    def open_until(self) -> float | None:
        """The clock time the open/disabled period ends, or None."""
        if self._state in (State.OPEN, State.DISABLED) and not self._forced:
            return self._until
        return None

    # -- calls -------------------------------------------------------------------------------

    def acquire(self, timeout: float = math.inf) -> Permit | None:
        """A permit for one call, or None when the breaker refuses it (short-circuit)."""
        timed = self._state in (State.OPEN, State.DISABLED) and not self._forced
        if timed and self._clock() >= self._until:
            self._move(State.HALF_OPEN, "probing")  # the only place time moves the state
        state = self._state
        if state is State.CLOSED:
            return Permit(self._generation)
        if state is not State.HALF_OPEN:
            return None
        now = self._clock()
        self._probes = [p for p in self._probes if p.expires > now]
        if len(self._probes) >= self.settings.half_open_probes:
            return None
        permit = Permit(self._generation, probe=True, expires=now + timeout)
        self._probes.append(permit)
        return permit

    def release(self, permit: Permit) -> None:
        """The call ended without telling anything about the provider (cancelled, caller fault)."""
        if permit.probe and permit in self._probes:
            self._probes.remove(permit)

    def record(self, permit: Permit, health: Health, retry_after: float | None = None) -> None:
        """Report how the permitted call went."""
        if permit.generation != self._generation:
            return  # decided under an earlier state: ignore (gobreaker generations)
        if permit.probe and permit not in self._probes:
            return  # this probe outlived its slot; another probe owns the decision now
        self.release(permit)
        if health is Health.SUCCESS:
            self._success()
        elif health is Health.FAILURE:
            self._failure()
        elif health is Health.THROTTLED:
            # The provider's own Retry-After is honoured (SPEC 5; the router caps it at a day).
            wait = retry_after if retry_after is not None else self.settings.open_for
            self._open(self._clock() + wait, "throttled by provider", State.OPEN)
        elif health is Health.DISABLED:
            self._open(self._clock() + self.settings.max_open_for, "account disabled",
                       State.DISABLED)

    def _success(self) -> None:
        if self._state is State.HALF_OPEN:
            self._probe_successes += 1
            if self._probe_successes >= self.settings.half_open_probes:
                self._close("probe succeeded")
        else:
            self._consecutive = 0
            self._window.add(self._clock(), failed=False)

    def _failure(self) -> None:
        if self._state is State.HALF_OPEN:
            self._level += 1
            self._open(self._clock() + self._open_time(), "probe failed", State.OPEN)
            return
        now = self._clock()
        self._consecutive += 1
        self._window.add(now, failed=True)
        s = self.settings
        calls, failures = self._window.totals(now)
        if self._consecutive >= s.consecutive_failures:
            self._open(now + self._open_time(), f"{self._consecutive} consecutive failures",
                       State.OPEN)
        elif calls >= s.minimum_calls and failures / calls >= s.failure_rate:
            self._open(now + self._open_time(), f"{failures}/{calls} calls failed", State.OPEN)

    def _open_time(self) -> float:
        s = self.settings
        base = s.open_for * math.pow(2, min(self._level, 30))
        return min(base * (1 + 0.2 * self._rand()), s.max_open_for)

    # -- transitions -------------------------------------------------------------------------

    def _open(self, until: float, reason: str, state: State) -> None:
        self._until = until
        self.reason = reason
        self._move(state, reason)

    def _close(self, reason: str) -> None:
        self._level = 0
        self._forced = False
        self.reason = ""
        self._move(State.CLOSED, reason)

    def _move(self, state: State, reason: str) -> None:
        old = self._state
        self._state = state
        self._generation += 1
        self._probes.clear()
        self._probe_successes = 0
        self._consecutive = 0
        self._window.clear()
        if old is not state and self._on_transition is not None:
            self._on_transition(self.name, old, state, reason)

    # -- operator controls -------------------------------------------------------------------

    def force_open(self) -> None:
        """Open until an operator closes or resets it."""
        self._forced = True
        self._open(math.inf, "forced open by operator", State.OPEN)

    def force_close(self) -> None:
        """Close now; the open time goes back to its base."""
        self._close("forced closed by operator")

    def disable_for(self, seconds: float, reason: str) -> None:
        """Disabled for ``seconds``: an account-level error another replica met (SPEC §11)."""
        self._open(self._clock() + seconds, reason, State.DISABLED)

    def update(self, settings: BreakerSettings) -> None:
        """New settings from a config reload; the state is kept."""
        if settings.window != self.settings.window:
            self._window = _Window(settings.window)
        self.settings = settings
