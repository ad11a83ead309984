"""Limits (SPEC §10): bucketed counters.

Revision ID: r0005
Revises: r0004
Create Date: 2026-12-03
"""

from __future__ import annotations

revision = "r0005"
down_revision = "r0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing yet: the limits work fills this in (placeholder keeps the chain fixed)."""


def downgrade() -> None:
    """Nothing to undo yet."""
