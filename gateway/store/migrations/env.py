"""Alembic's entry: always run by gateway.store.migrate on a connection it opened itself."""

from __future__ import annotations

from alembic import context

from gateway.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
