"""Delivery receipts (SPEC §9).

Revision ID: r0004
Revises: r0003
Create Date: 2026-12-03
"""

from __future__ import annotations

revision = "r0004"
down_revision = "r0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing yet: the receipts work fills this in (placeholder keeps the chain fixed)."""


def downgrade() -> None:
    """Nothing to undo yet."""
