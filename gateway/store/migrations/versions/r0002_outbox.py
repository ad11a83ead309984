"""The outbox (SPEC §8): what async sending adds.

r0001 already has the outbox's columns (attempts, next_attempt_at, lease_until, lease_owner,
expires_at, callback_url) and its partial index; this adds how often a message was put back
(its backoff's exponent) and why it is waiting (``backoff`` or ``providers_open``).

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


def upgrade() -> None:
    """Add messages.retries and messages.waiting."""
    op.add_column("messages", sa.Column("retries", sa.Integer, nullable=False,
                                        server_default=sa.text("0")))
    op.add_column("messages", sa.Column("waiting", sa.String(16)))


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("waiting")
        batch.drop_column("retries")
