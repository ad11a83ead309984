"""Scale-out (SPEC §11): replicas' heartbeats.

Revision ID: r0006
Revises: r0005
Create Date: 2026-12-03
"""

from __future__ import annotations

revision = "r0006"
down_revision = "r0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing yet: the replicas work fills this in (placeholder keeps the chain fixed)."""


def downgrade() -> None:
    """Nothing to undo yet."""
