"""The service's side of the message store: its folder, its retention task, its failures as
503s, and the provider states it keeps across restarts: forced open by an operator, disabled
by an account-level error."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.breaker import State
from gateway.config import Config, StorageConfig
from gateway.problems import Problem
from gateway.runtime import Runtime
from gateway.store import Settled, Store, StoreError

log = logging.getLogger("gateway.service")
T = TypeVar("T")

DEFAULT_STORAGE = StorageConfig()
SWEEP_EVERY = 600.0  # seconds between retention passes (the first runs at start)
SETTLE_EVERY = 2.0  # seconds between looks for sync sends a crash left half done
IN_FLIGHT_GRACE = 5.0  # beyond a send's deadline and pool wait: a slow store write, a late answer


def make_default_folder(storage: StorageConfig) -> None:
    """The shipped default's folder (data/ beside the config) is made, like logs/; a folder the
    config names must exist: a typo must not start an empty store somewhere else."""
    if storage.url == DEFAULT_STORAGE.url and storage.base is not None:
        with contextlib.suppress(OSError):  # if it cannot be made, the store's error says why
            (storage.base / "data").mkdir(exist_ok=True)


async def sweeping(store: Store, retention: float,
                   limits_horizon: Callable[[], float] | None = None) -> None:
    """Delete records past ``retention`` and expired keys, now and every SWEEP_EVERY; and limit
    counts older than the longest window (``limits_horizon()``, read each pass)."""
    while True:
        try:
            records, keys = await store.sweep(retention)
            if records or keys:
                log.info("retention: %d records and %d idempotency keys deleted", records, keys)
            if limits_horizon is not None:
                await store.limits.prune(limits_horizon())
        except StoreError as exc:
            if store.health.up:  # while it is down, its one "store down" line says it all
                log.warning("retention pass failed (tried again later): %s", exc)
        await asyncio.sleep(SWEEP_EVERY)


def in_flight_bound(config: Config) -> float:
    """The longest a sync send can be in flight: a ``sending`` record or an in-flight
    Idempotency-Key claim older than this was left by a process that died (kill -9)."""
    return config.deadline + config.server.pool_wait + IN_FLIGHT_GRACE


async def settling(store: Store, current: Callable[[], Config],
                   announce: Callable[[str, str | None], Awaitable[None]]) -> None:
    """Settle sync sends a crash left half done (``unknown``: maybe sent), now and every
    SETTLE_EVERY: at start for this process's own, later for a replica's that died."""
    while True:
        config = current()
        try:
            settled = await store.settle_interrupted(in_flight_bound(config),
                                                     keep_params=config.storage.keep_params)
        except StoreError as exc:
            if store.health.up:  # while it is down, its one "store down" line says it all
                log.warning("settling interrupted sends failed (tried again later): %s", exc)
        else:
            await tell(settled, announce)
        await asyncio.sleep(SETTLE_EVERY)


async def tell(settled: list[Settled],
               announce: Callable[[str, str | None], Awaitable[None]]) -> None:
    """Log each settled send (and tell its status callback, if it has one)."""
    for one in settled:
        log.warning("send %s: %s, interrupted by a restart before it was answered", one.id,
                    one.status)
        await announce(one.id, one.callback_url)


async def restore_forced(store: Store, runtime: Runtime, now: float | None = None) -> None:
    """Breakers an operator forced open stay open across a restart (the store keeps them), and
    so do providers an account-level error disabled, for what is left of their period (``now``:
    the store's wall clock)."""
    try:
        states = await store.providers.all()
    except StoreError:  # not reachable yet: the cluster's sync applies them once it is
        return
    for name, state in states.items():
        member = runtime.member(name)
        if member is None:
            continue
        if state.forced_open:
            member.breaker.force_open()
            log.info("provider %s stays forced open (since before the restart)", name)
        elif state.disabled_until is not None and now is not None and state.disabled_until > now:
            member.breaker.disable(state.disabled_until - now, state.reason or "account disabled")
            log.info("provider %s stays disabled for %.0f s (%s, since before the restart)",
                     name, state.disabled_until - now, state.reason)


class DisabledKeeper:
    """Writes a provider's ``disabled`` state (an account-level error) to the store when its
    breaker enters it, and clears it when the breaker leaves it (an operator's close or reset,
    or the period's end), so a restart neither forgets nor revives it. The breaker's clock is
    monotonic; the stored time is the wall clock's (``wall``)."""

    def __init__(self, store: Store, runtime: Runtime, clock: Callable[[], float],
                 wall: Callable[[], float]) -> None:
        self._store = store
        self._runtime = runtime
        self._clock = clock
        self._wall = wall
        self._writes: set[asyncio.Task[None]] = set()

    def moved(self, name: str, old: State, new: State, reason: str) -> None:
        """A breaker's transition (sync, from the breaker): keep what concerns ``disabled``."""
        if new is State.DISABLED:
            member = self._runtime.member(name)
            until = member.breaker.open_until() if member is not None else None
            if until is None:
                return
            wall_until: float | None = self._wall() + max(0.0, until - self._clock())
        elif old is State.DISABLED:
            wall_until, reason = None, ""
        else:
            return
        # Tasks start in order, so the writes queue (and commit) in the order of the moves.
        task = asyncio.get_running_loop().create_task(self._keep(name, wall_until, reason))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _keep(self, name: str, until: float | None, reason: str) -> None:
        try:
            await self._store.providers.set_disabled(name, until, reason or None)
        except StoreError as exc:
            log.warning("provider %s: %s now, but not kept across a restart: %s", name,
                        "disabled" if until is not None else "enabled again", exc)

    async def drain(self) -> None:
        """Wait for the writes still queued (before the store closes)."""
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)


async def keep_forced(store: Store, name: str, forced: bool) -> None:
    """Remember an operator's force-open (or its end) for the next start."""
    try:
        why = "forced open by operator" if forced else None
        await store.providers.set_forced_open(name, forced, why)
        if not forced:  # closed by hand: an account-level disable ends too, on every replica
            await store.providers.set_disabled(name, None, None)
    except StoreError as exc:
        log.warning("provider %s: forced %s now, but not kept across a restart: %s",
                    name, "open" if forced else "closed", exc)


async def available(work: Awaitable[T]) -> T:
    """``work``'s result; a store failure becomes the 503 that says nothing was sent."""
    try:
        return await work
    except StoreError:
        raise unavailable() from None


def available_now(store: Store) -> None:
    try:
        store.ensure_file()
    except StoreError:
        raise unavailable() from None


def unavailable() -> Problem:
    return Problem(503, "the message store is unavailable, so nothing was sent",
                   slug="store-unavailable", retry_after=1.0)
