"""Providers disabled by an account-level error or forced open by hand, kept across restarts.

Breaker failure counts stay in memory; only these two decisions are durable.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, delete, select

from gateway.store.db import Database, insert
from gateway.store.schema import from_us, provider_state, to_us
from gateway.store.signals import notify_in

CHANNEL = "provider_state"  # NOTIFYed (PostgreSQL) with the provider's name on every change


@dataclass(frozen=True, slots=True)
class ProviderState:
    """One provider's durable state."""

    name: str
    disabled_until: float | None  # None: not disabled
    forced_open: bool
    reason: str | None
    updated_at: float


class ProviderStates:
    """Read and change the durable provider state."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def set_disabled(self, name: str, until: float | None, reason: str | None) -> None:
        """Disable ``name`` until ``until`` (None: enable it again)."""
        await self._upsert(name, disabled_until=None if until is None else to_us(until),
                           reason=reason)

    async def set_forced_open(self, name: str, forced: bool, reason: str | None = None) -> None:
        """Force ``name``'s breaker open (an operator's decision), or lift it."""
        await self._upsert(name, forced_open=forced, reason=reason)

    async def clear(self, name: str) -> None:
        """Forget everything stored for ``name``."""

        def write(conn: Connection) -> None:
            conn.execute(delete(provider_state).where(provider_state.c.name == name))
            notify_in(conn, CHANNEL, name)

        await self._db.write(write)

    async def all(self) -> dict[str, ProviderState]:
        """Every provider with stored state, by name."""

        def read(conn: Connection) -> dict[str, ProviderState]:
            rows = conn.execute(select(provider_state).order_by(provider_state.c.name))
            return {row.name: ProviderState(row.name, from_us(row.disabled_until),
                                            bool(row.forced_open), row.reason,
                                            from_us(row.updated_at) or 0.0) for row in rows}

        return await self._db.read(read)

    async def _upsert(self, name: str, **values: object) -> None:
        def write(conn: Connection) -> None:
            changes = {**values, "updated_at": self._db.now_us()}
            conn.execute(
                insert(conn, provider_state).values(name=name, **changes)
                .on_conflict_do_update(index_elements=["name"], set_=changes))
            notify_in(conn, CHANNEL, name)  # every replica reads it now, not at its next poll

        await self._db.write(write)
