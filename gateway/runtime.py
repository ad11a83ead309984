"""The running config: the current snapshot, plus breakers and stats that outlive reloads."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import aiohttp

from gateway.breaker import CircuitBreaker, Transition
from gateway.config import Config
from gateway.router import Member, Snapshot
from gateway.stats import ProviderStats

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ReloadStatus:
    """What the last config load did, for /status and the dashboard."""

    source: str
    loaded_at: float  # wall clock of the last good load
    generation: int = 1
    error: str | None = None  # the last failed reload's problems, until a good one
    failed_at: float | None = None


class Runtime:
    """Owns the current :class:`Snapshot`; ``apply`` swaps in a new config without a restart."""

    def __init__(
        self,
        config: Config,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Transition | None = None,  # every breaker's moves (the observer's)
    ) -> None:
        self._session = session
        self._clock = clock
        self._on_transition = on_transition
        self._breakers: dict[str, CircuitBreaker] = {}
        self._stats: dict[str, ProviderStats] = {}
        self.snapshot = self._build(config)
        self.reload = ReloadStatus(config.source, time.time())
        self._pool_size = config.server.pool_size  # the session's pool, sized once

    def _build(self, config: Config) -> Snapshot:
        # Providers first: a constructor that raises must leave the running breakers untouched.
        built = [(pc, pc.cls(pc.settings, self._session)) for pc in config.providers]
        members = []
        for provider_config, provider in built:
            name = provider_config.name
            breaker = self._breakers.get(name)
            if breaker is None:
                breaker = self._breakers[name] = CircuitBreaker(
                    name, provider_config.breaker, clock=self._clock,
                    on_transition=self._on_transition)
            else:
                breaker.update(provider_config.breaker)
            stats = self._stats.setdefault(name, ProviderStats())
            members.append(Member(provider_config, provider, breaker, stats))
        # stable sort: equal priorities keep their order in the file
        members.sort(key=lambda m: m.config.priority)
        kept = {m.name for m in members}
        for gone in set(self._breakers) - kept:  # a removed provider starts fresh if it returns
            del self._breakers[gone]
            self._stats.pop(gone, None)
        return Snapshot(config, tuple(members))

    @property
    def config(self) -> Config:
        return self.snapshot.config

    def apply(self, config: Config) -> None:
        """Swap in a validated config; breakers of providers that keep their name survive."""
        self.snapshot = self._build(config)
        self.reload = ReloadStatus(config.source, time.time(), self.reload.generation + 1)
        if config.server.pool_size != self._pool_size:
            log.warning("server.pool_size %d applies at the next start; the pool keeps %d "
                        "connections per provider host", config.server.pool_size, self._pool_size)

    def reject(self, error: str) -> None:
        """Record a reload that failed; the running config stays."""
        self.reload.error = error
        self.reload.failed_at = time.time()

    def member(self, name: str) -> Member | None:
        return next((m for m in self.snapshot.members if m.name == name), None)

    def breaker_states(self) -> Iterator[tuple[str, str]]:
        """(provider, state) for every provider, ``disabled`` for those turned off in config."""
        for m in self.snapshot.members:
            yield m.name, "disabled" if not m.config.enabled else m.breaker.state.value
