"""Is the database there? One answer for the whole process, and the way back when it was not.

While the store is *down* reads and writes fail at once with StoreUnavailableError (a send
answers 503 at once instead of each waiting on a dead server), except one real try every
TRIAL_EVERY (a breaker's half-open probe: the first operation after the server is back succeeds
and brings the store up); and one probe task reconnects with a growing, jittered backoff, so the
store comes back without traffic too. Each change is logged once: "store down" and "store
back", never a traceback per request. What counts as an outage is a lost or refused connection,
not a statement the database refused (a conflict, a deadlock between replicas).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

from sqlalchemy.exc import DBAPIError, InterfaceError

from gateway.store.errors import StoreUnavailableError

log = logging.getLogger("gateway.store")

FIRST_RETRY = 0.25  # seconds before the first probe; doubled after each failed one
MAX_RETRY = 5.0
TRIAL_EVERY = 0.1  # while down, at most one operation per this many seconds tries for real
# SQLSTATE classes of a server that is there but not accepting us *now*: 08 connection
# exception, 53 insufficient resources (too many connections), 57 operator intervention
# (shutting down, starting up, failing over).
_TRANSIENT_CLASSES = ("08", "53", "57")

Probe = Callable[[], Awaitable[object]]
Listener = Callable[[bool], None]


def sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE behind ``exc`` (SQLAlchemy wraps asyncpg's error), if any."""
    original = getattr(exc, "orig", None) or exc
    code = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    return code if isinstance(code, str) else None


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached (rather than that it refused)."""
    if isinstance(exc, OSError | ConnectionError | TimeoutError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    code = sqlstate(exc)
    if code is not None:
        return code[:2] in _TRANSIENT_CLASSES
    original = getattr(exc, "orig", None)
    cause = getattr(original, "__cause__", None)
    if any(isinstance(e, OSError | ConnectionError | TimeoutError) for e in (original, cause)):
        return True
    # asyncpg's "connection is closed" and kin carry no SQLSTATE: the driver's InterfaceError
    return isinstance(exc, InterfaceError)


class StoreHealth:
    """The store's up/down state: fail fast while down, probe until it is back."""

    def __init__(self, shown: str, probe: Probe, *, clock: Callable[[], float] = time.monotonic,
                 rand: Callable[[], float] = random.random) -> None:
        self._shown = shown
        self.probe = probe  # what proves the store is back (replaceable: see open_store)
        self._clock = clock
        self._rand = rand
        self.up = True
        self.reason = ""
        self.down_since: float | None = None
        self.listeners: list[Listener] = []  # told True when it comes back, False when it goes
        # False while the store is not migrated yet: only the probe may bring it up then
        self.trials = True
        self._trial_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def check(self) -> None:
        """Raise StoreUnavailableError while the store is down (but for one try now and then,
        whose success calls :meth:`succeeded`)."""
        if self.up:
            return
        now = self._clock()
        if self.trials and (self._trial_at is None or now - self._trial_at >= TRIAL_EVERY):
            self._trial_at = now
            return
        raise StoreUnavailableError(f"the store at {self._shown} is unreachable: "
                                    f"{self.reason}")

    def failed(self, reason: str) -> None:
        """An operation met an outage: go down (logged once) and start probing."""
        if not self.up or self._closed:
            return
        self.up = False
        self.reason = reason
        self.down_since = self._clock()
        log.error("store down: %s unreachable (%s); POST /sms answers 503 store-unavailable "
                  "and /readyz 503 until it is back (reconnecting by itself)",
                  self._shown, reason)
        self._tell(False)
        self._start_probe()

    def succeeded(self) -> None:
        """The database answered: back up (logged once)."""
        if self.up:
            return
        self.up = True
        took = self._clock() - (self.down_since or self._clock())
        self.down_since = None
        log.warning("store back: %s answers again after %.1fs down", self._shown, took)
        self._tell(True)

    def _tell(self, up: bool) -> None:
        for listener in list(self.listeners):
            try:
                listener(up)
            except Exception:  # a listener's trouble must not keep the state from moving
                log.exception("a store health listener failed")

    def _start_probe(self) -> None:
        if self._task is not None and not self._task.done():
            return
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to probe with
            self._task = asyncio.get_running_loop().create_task(self._probing(),
                                                                name="store-probe")

    async def _probing(self) -> None:
        delay = FIRST_RETRY
        while not self.up and not self._closed:
            # full jitter: replicas that lost the server together do not return in step
            await asyncio.sleep(delay * (0.5 + self._rand() / 2))
            try:
                await self.probe()
            except Exception as exc:  # still down: the reason may have changed, say nothing
                self.reason = _short(exc)
                delay = min(delay * 2, MAX_RETRY)
            else:
                self.succeeded()

    async def close(self) -> None:
        """Stop probing."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _short(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    text = str(original).splitlines()[0] if str(original) else ""
    return text or type(original).__name__
