"""Delivery receipts (SPEC §9): no schema of their own. r0001 already has what they use:
``recipients`` (provider_message_id, status, code, at; indexed by provider_message_id) and
``unmatched_receipts``.

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
    """Nothing to add (the revision keeps the chain fixed)."""


def downgrade() -> None:
    """Nothing to undo."""
