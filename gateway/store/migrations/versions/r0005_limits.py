"""Limits (SPEC §10): each hit's place in its bucket, and the refusals of the last hour.

Revision ID: r0005
Revises: r0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0005"
down_revision = "r0004"
branch_labels = None
depends_on = None

SERIAL = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite: the rowid alias


def upgrade() -> None:
    """limit_hits.seq (r0001 made the table, nothing wrote it before), limit_refusals."""
    op.add_column("limit_hits", sa.Column("seq", sa.BigInteger, nullable=False,
                                          server_default=sa.text("0")))
    op.create_table(
        "limit_refusals",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("message_id", sa.String(64)),
        sa.PrimaryKeyConstraint("id", name="pk_limit_refusals"),
    )
    op.create_index("ix_limit_refusals_at", "limit_refusals", ["at"])


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_index("ix_limit_refusals_at", table_name="limit_refusals")
    op.drop_table("limit_refusals")
    with op.batch_alter_table("limit_hits") as batch:
        batch.drop_column("seq")
