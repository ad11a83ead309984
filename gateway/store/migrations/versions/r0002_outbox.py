"""The outbox (SPEC §8): what async sending adds.

Revision ID: r0002
Revises: r0001
Create Date: 2026-12-03
"""

from __future__ import annotations

revision = "r0002"
down_revision = "r0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing yet: the outbox work fills this in (placeholder keeps the chain fixed)."""


def downgrade() -> None:
    """Nothing to undo yet."""
