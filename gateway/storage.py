"""The service's side of the message store: its folder, its retention task, its failures as
503s, and the operator's forced-open breakers it keeps across restarts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TypeVar

from gateway.config import StorageConfig
from gateway.problems import Problem
from gateway.runtime import Runtime
from gateway.store import Store, StoreError

log = logging.getLogger("gateway.service")
T = TypeVar("T")

DEFAULT_STORAGE = StorageConfig()
SWEEP_EVERY = 600.0  # seconds between retention passes (the first runs at start)


def make_default_folder(storage: StorageConfig) -> None:
    """The shipped default's folder (data/ beside the config) is made, like logs/; a folder the
    config names must exist: a typo must not start an empty store somewhere else."""
    if storage.url == DEFAULT_STORAGE.url and storage.base is not None:
        with contextlib.suppress(OSError):  # if it cannot be made, the store's error says why
            (storage.base / "data").mkdir(exist_ok=True)


async def sweeping(store: Store, retention: float) -> None:
    """Delete records past ``retention`` and expired keys, now and every SWEEP_EVERY."""
    while True:
        try:
            records, keys = await store.sweep(retention)
            if records or keys:
                log.info("retention: %d records and %d idempotency keys deleted", records, keys)
        except StoreError as exc:
            if store.health.up:  # while it is down, its one "store down" line says it all
                log.warning("retention pass failed (tried again later): %s", exc)
        await asyncio.sleep(SWEEP_EVERY)


async def restore_forced(store: Store, runtime: Runtime) -> None:
    """Breakers an operator forced open stay open across a restart (the store keeps them)."""
    try:
        states = await store.providers.all()
    except StoreError:  # not reachable yet: the cluster's sync applies them once it is
        return
    for name, state in states.items():
        member = runtime.member(name)
        if state.forced_open and member is not None:
            member.breaker.force_open()
            log.info("provider %s stays forced open (since before the restart)", name)


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
