"""Status callbacks (SPEC §8): their own durable queue.

Revision ID: r0003
Revises: r0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0003"
down_revision = "r0002"
branch_labels = None
depends_on = None

US = sa.BigInteger  # microseconds since the epoch
SERIAL = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite: the rowid alias


def upgrade() -> None:
    """The callbacks queue: one row per callback still to be delivered."""
    op.create_table(
        "callbacks",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", US, nullable=False),
        sa.Column("created_at", US, nullable=False),
        sa.Column("lease_until", US),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("last_error", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_callbacks"),
    )
    op.create_index("ix_callbacks_next_attempt", "callbacks", ["next_attempt_at"])


def downgrade() -> None:
    """Drop the callbacks queue."""
    op.drop_table("callbacks")
