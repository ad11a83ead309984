"""Status callbacks (SPEC §8): their own durable queue.

Revision ID: r0003
Revises: r0002
Create Date: 2026-12-03
"""

from __future__ import annotations

revision = "r0003"
down_revision = "r0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing yet: the callbacks work fills this in (placeholder keeps the chain fixed)."""


def downgrade() -> None:
    """Nothing to undo yet."""
