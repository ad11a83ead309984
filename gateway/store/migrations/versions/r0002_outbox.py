"""The outbox (SPEC §8): what async sending adds.

r0001 already has the outbox's columns (attempts, next_attempt_at, lease_until, lease_owner,
expires_at, callback_url) and its partial index; this adds how often a message was put back
(its backoff's exponent) and why it is waiting (``backoff`` or ``providers_open``), and three
partial indexes over the async messages not yet final, so that with a deep backlog expiry finds
the expired ones, and the depth, the oldest and the "waiting for providers" count are read,
without a scan of the whole queue.

Revision ID: r0002
Revises: r0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0002"
down_revision = "r0001"
branch_labels = None
depends_on = None

QUEUED = sa.text("status IN ('queued', 'sending') AND next_attempt_at IS NOT NULL")


def upgrade() -> None:
    """Add messages.retries and messages.waiting."""
    op.add_column("messages", sa.Column("retries", sa.Integer, nullable=False,
                                        server_default=sa.text("0")))
    op.add_column("messages", sa.Column("waiting", sa.String(16)))
    for name, column in (("ix_messages_outbox_expires", "expires_at"),
                         ("ix_messages_outbox_created", "created_at"),
                         ("ix_messages_outbox_waiting", "waiting")):
        op.create_index(name, "messages", [column], sqlite_where=QUEUED, postgresql_where=QUEUED)


def downgrade() -> None:
    """Drop them again."""
    for name in ("ix_messages_outbox_waiting", "ix_messages_outbox_created",
                 "ix_messages_outbox_expires"):
        op.drop_index(name, "messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("waiting")
        batch.drop_column("retries")
