"""One gateway among replicas sharing a store (SPEC §11).

- Heartbeats: this process's row in ``replicas`` every HEARTBEAT seconds, with its breaker view;
  ``alive`` is every replica seen within ALIVE_WITHIN (three heartbeats), for /status and the
  dashboard.
- Provider state: an operator's force-open and an account-level disable are global. Each change
  is written to ``provider_state`` (which NOTIFYs on PostgreSQL); every replica reads the table
  when notified and every SYNC_EVERY seconds regardless, and applies what changed since its last
  read to its own breakers. Failure counts stay per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

from gateway import __version__
from gateway.breaker import State
from gateway.runtime import Runtime
from gateway.store import Store, StoreError
from gateway.store.provider_state import CHANNEL, ProviderState
from gateway.store.replicas import ReplicaRow

log = logging.getLogger("gateway.cluster")

HEARTBEAT = 2.0  # seconds between heartbeats
ALIVE_WITHIN = 3 * HEARTBEAT + 1.0  # a replica silent longer than this is not listed
SYNC_EVERY = 2.0  # seconds between reads of provider_state, notified or not
PRUNE_AFTER = 86400.0  # heartbeats of processes gone this long are deleted
ACCOUNT_DISABLED = "account disabled"  # the breaker's reason for Health.DISABLED


def replica_id() -> str:
    """host:pid:random, unique even when a pid is reused."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{secrets.token_hex(3)}"


class Cluster:
    """This replica's heartbeat and its share of the global provider state."""

    def __init__(self, store: Store, runtime: Callable[[], Runtime | None], *,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._runtime = runtime
        self._wall = wall_clock
        self.id = replica_id()
        self.started_at = wall_clock()
        self.alive: list[ReplicaRow] = []  # as of the last heartbeat
        self._applied: dict[str, float] = {}  # provider -> updated_at of the row last applied
        self._wake = asyncio.Event()

    # -- running -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Heartbeats and provider-state sync until cancelled (then the heartbeat is removed)."""
        self.store.listen(CHANNEL, lambda _payload: self._wake.set())
        self.store.health.listeners.append(self._on_health)
        tasks = [asyncio.create_task(self._beating(), name="replica-heartbeat"),
                 asyncio.create_task(self._syncing(), name="provider-state-sync")]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(StoreError):
                await self.store.replicas.forget(self.id)

    def _on_health(self, up: bool) -> None:
        if up:  # what changed while the store was away: read it now
            self._wake.set()

    async def _beating(self) -> None:
        beats = 0
        while True:
            try:
                await self.beat()
                if beats % 300 == 0:
                    await self.store.replicas.prune(self._wall() - PRUNE_AFTER)
                beats += 1
            except StoreError:
                pass  # the store's health logs the outage once
            await asyncio.sleep(HEARTBEAT)

    async def beat(self) -> None:
        """Write this replica's heartbeat, then read who is alive."""
        await self.store.replicas.beat(self.id, self.started_at, __version__, self.breakers())
        self.alive = await self.store.replicas.seen_since(self._wall() - ALIVE_WITHIN)

    async def _syncing(self) -> None:
        while True:
            self._wake.clear()
            with contextlib.suppress(StoreError):  # the store's health logs an outage once
                await self.sync()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SYNC_EVERY)

    # -- provider state ------------------------------------------------------------------------

    async def sync(self) -> None:
        """Apply what others changed (this replica's own disables are written as its breakers
        move: gateway.storage.DisabledKeeper)."""
        runtime = self._runtime()
        if runtime is None:
            return
        for name, state in (await self.store.providers.all()).items():
            if self._applied.get(name) == state.updated_at:
                continue  # seen (or written) already: a stale read must not undo a newer act
            self._applied[name] = state.updated_at
            self._apply(runtime, state)

    def _apply(self, runtime: Runtime, state: ProviderState) -> None:
        member = runtime.member(state.name)
        if member is None:
            return
        breaker = member.breaker
        if state.forced_open and not breaker.forced:
            breaker.force_open()
            log.info("provider %s: forced open on another replica", state.name)
        elif not state.forced_open and breaker.forced:
            breaker.force_close()
            log.info("provider %s: force-open lifted on another replica", state.name)
        left = (state.disabled_until or 0.0) - self._wall()
        if state.disabled_until is None and breaker.state is State.DISABLED \
                and not breaker.forced:  # an operator closed it on another replica
            breaker.force_close()
            log.info("provider %s: enabled again on another replica", state.name)
        elif left > 0 and not breaker.forced and breaker.state is not State.DISABLED:
            breaker.disable(left, state.reason or ACCOUNT_DISABLED)
            log.info("provider %s: disabled on another replica (%s)", state.name,
                     state.reason or ACCOUNT_DISABLED)

    # -- views ---------------------------------------------------------------------------------

    def breakers(self) -> dict[str, Any]:
        """This replica's breaker view: provider -> state, forced, reason."""
        runtime = self._runtime()
        if runtime is None:
            return {}
        return {m.name: {"state": "disabled" if not m.config.enabled else m.breaker.state.value,
                         "forced": m.breaker.forced, "reason": m.breaker.reason}
                for m in runtime.snapshot.members}

    def view(self) -> dict[str, Any]:
        """For /status and the dashboard: this replica, the store's state, who is alive."""
        now = self._wall()
        rows = {row.id: row for row in self.alive}
        replicas = [{"id": row.id, "self": row.id == self.id, "version": row.version,
                     "started_at": row.started_at, "seen_s_ago": round(now - row.seen_at, 1),
                     "breakers": row.breakers} for row in rows.values()]
        if self.id not in rows:  # not written yet (or the store is down): still show ourselves
            replicas.insert(0, {"id": self.id, "self": True, "version": __version__,
                                "started_at": self.started_at, "seen_s_ago": None,
                                "breakers": self.breakers()})
        health = self.store.health
        return {"id": self.id, "store_up": health.up,
                "store_error": None if health.up else health.reason, "replicas": replicas}
