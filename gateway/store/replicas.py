"""Replicas' heartbeats: which gateway processes share this store, and how each sees its
providers (breakers count failures per process, SPEC §11)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, select

from gateway.store.db import Database, insert
from gateway.store.schema import from_us, replicas, to_us


@dataclass(frozen=True, slots=True)
class ReplicaRow:
    """One process's last heartbeat."""

    id: str  # host:pid:random
    started_at: float
    seen_at: float
    version: str
    breakers: dict[str, Any]  # provider -> {"state", "forced", "reason"}


class ReplicaTable:
    """Write this process's heartbeat; read everyone's."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def beat(self, replica_id: str, started_at: float, version: str,
                   breakers: dict[str, Any]) -> None:
        """Say that ``replica_id`` is alive now, with its breaker view."""
        view = json.dumps(breakers, sort_keys=True)

        def write(conn: Connection) -> None:
            seen = self._db.now_us()
            conn.execute(
                insert(conn, replicas)
                .values(id=replica_id, started_at=to_us(started_at), seen_at=seen,
                        version=version, breakers=view)
                .on_conflict_do_update(index_elements=["id"],
                                       set_={"seen_at": seen, "breakers": view}))

        await self._db.write(write)

    async def seen_since(self, since: float) -> list[ReplicaRow]:
        """Every replica whose last heartbeat is at or after ``since``, oldest first."""

        def read(conn: Connection) -> list[ReplicaRow]:
            rows = conn.execute(select(replicas).where(replicas.c.seen_at >= to_us(since))
                                .order_by(replicas.c.started_at, replicas.c.id))
            return [ReplicaRow(row.id, from_us(row.started_at) or 0.0,
                               from_us(row.seen_at) or 0.0, row.version,
                               _breakers(row.breakers)) for row in rows]

        return await self._db.read(read)

    async def forget(self, replica_id: str) -> None:
        """Remove ``replica_id`` (a clean stop: it is gone, not merely silent)."""
        await self._db.write(lambda conn: conn.execute(
            delete(replicas).where(replicas.c.id == replica_id)))

    async def prune(self, before: float) -> int:
        """Delete heartbeats older than ``before`` (processes long gone); how many."""

        def write(conn: Connection) -> int:
            return conn.execute(delete(replicas).where(replicas.c.seen_at < to_us(before))
                                ).rowcount or 0

        return await self._db.write(write)


def _breakers(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
