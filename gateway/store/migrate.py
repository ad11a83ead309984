"""Alembic, run programmatically: the migrations ship inside the package (migrations/)."""

from __future__ import annotations

import logging
from pathlib import Path

# Alembic narrates every import and start at INFO ("setup plugin ...", "Context impl
# SQLiteImpl."): only its warnings count, so this comes before its first import.
logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from sqlalchemy import Connection, text  # noqa: E402

from gateway.store.errors import SchemaTooNewError  # noqa: E402

MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant: replicas starting together migrate one after the other (PostgreSQL only).
_PG_LOCK = 0x5_3_4_D_5_3  # "SMS"


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this code knows."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def current(connection: Connection) -> tuple[str, ...]:
    """The revision(s) the database is at; () before the first migration."""
    return MigrationContext.configure(connection).get_current_heads()


def upgrade_connection(connection: Connection, shown: str) -> str:
    """Migrate the database behind ``connection`` to head, inside the caller's transaction;
    the revision reached. SchemaTooNewError if the database is ahead of this code."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
    return _upgrade(connection, shown)


def _upgrade(connection: Connection, shown: str) -> str:
    script = ScriptDirectory.from_config(_config())
    known = {rev.revision for rev in script.walk_revisions()}
    for revision in current(connection):
        if revision not in known:
            raise SchemaTooNewError(
                f"the database at {shown} has schema revision {revision!r}, newer than this "
                f"gateway knows (its newest is {script.get_current_head()!r}): "
                "run the newer gateway, or restore a backup taken before it migrated")
    command.upgrade(_config(connection), "head")
    return head()
