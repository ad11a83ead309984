"""Scale-out (SPEC §11): replicas' heartbeats.

Revision ID: r0006
Revises: r0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0006"
down_revision = "r0005"
branch_labels = None
depends_on = None

US = sa.BigInteger  # microseconds since the epoch


def upgrade() -> None:
    """One row per running gateway process, rewritten every few seconds."""
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(160), nullable=False),
        sa.Column("started_at", US, nullable=False),
        sa.Column("seen_at", US, nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("breakers", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_replicas"),
    )
    op.create_index("ix_replicas_seen_at", "replicas", ["seen_at"])


def downgrade() -> None:
    """Drop the heartbeats."""
    op.drop_index("ix_replicas_seen_at", table_name="replicas")
    op.drop_table("replicas")
