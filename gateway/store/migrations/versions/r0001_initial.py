"""The first schema: messages, recipients, attempts, idempotency, provider state, limits.

Revision ID: r0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(64)
NAME = sa.String(128)
US = sa.BigInteger  # microseconds since the epoch
SERIAL = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite: the rowid alias
OUTBOX = sa.text("status IN ('queued', 'sending')")


def upgrade() -> None:
    """Create every table and index of the first schema."""
    op.create_table(
        "messages",
        sa.Column("id", ID, primary_key=True),
        sa.Column("caller", NAME, nullable=False),
        sa.Column("template", NAME, nullable=False),
        sa.Column("numbers", sa.Text, nullable=False),
        sa.Column("params", sa.Text),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", US, nullable=False),
        sa.Column("updated_at", US, nullable=False),
        sa.Column("final_at", US),
        sa.Column("expires_at", US),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", US),
        sa.Column("lease_until", US),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("callback_url", sa.Text),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("provider", NAME),
        sa.Column("provider_message_id", sa.String(255)),
        sa.Column("error", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
    )
    op.create_index("ix_messages_created", "messages", ["created_at", "id"])
    op.create_index("ix_messages_status_created", "messages", ["status", "created_at"])
    op.create_index("ix_messages_template_created", "messages", ["template", "created_at"])
    op.create_index("ix_messages_caller_created", "messages", ["caller", "created_at"])
    op.create_index("ix_messages_outbox", "messages", ["next_attempt_at"],
                    sqlite_where=OUTBOX, postgresql_where=OUTBOX)
    _children()
    _state()


def _children() -> None:
    op.create_table(
        "recipients",
        sa.Column("message_id", ID, nullable=False),
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("created_at", US, nullable=False),
        sa.Column("provider_message_id", sa.String(255)),
        sa.Column("status", sa.String(16)),
        sa.Column("code", sa.String(64)),
        sa.Column("at", US),
        sa.PrimaryKeyConstraint("message_id", "number", name="pk_recipients"),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE",
                                name="fk_recipients_message_id_messages"),
    )
    op.create_index("ix_recipients_number_created", "recipients",
                    ["number", "created_at", "message_id"])
    op.create_index("ix_recipients_provider_message", "recipients", ["provider_message_id"])
    op.create_table(
        "attempts",
        sa.Column("message_id", ID, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("provider", NAME, nullable=False),
        sa.Column("started_at", US, nullable=False),
        sa.Column("finished_at", US),
        sa.Column("outcome", sa.String(16)),
        sa.Column("error", sa.Text),
        sa.Column("provider_message_id", sa.String(255)),
        sa.PrimaryKeyConstraint("message_id", "seq", name="pk_attempts"),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE",
                                name="fk_attempts_message_id_messages"),
    )


def _state() -> None:
    op.create_table(
        "idempotency",
        sa.Column("caller", NAME, nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message_id", ID),
        sa.Column("status_code", sa.Integer),
        sa.Column("response", sa.Text),
        sa.Column("created_at", US, nullable=False),
        sa.Column("expires_at", US, nullable=False),
        sa.PrimaryKeyConstraint("caller", "key", name="pk_idempotency"),
    )
    op.create_index("ix_idempotency_expires", "idempotency", ["expires_at"])
    op.create_table(
        "provider_state",
        sa.Column("name", NAME, nullable=False),
        sa.Column("disabled_until", US),
        sa.Column("forced_open", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("reason", sa.Text),
        sa.Column("updated_at", US, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_provider_state"),
    )
    op.create_table(
        "limit_hits",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("bucket", sa.String(255), nullable=False),
        sa.Column("at", US, nullable=False),
        sa.Column("message_id", ID),
        sa.PrimaryKeyConstraint("id", name="pk_limit_hits"),
    )
    op.create_index("ix_limit_hits_bucket_at", "limit_hits", ["bucket", "at"])
    op.create_table(
        "unmatched_receipts",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("provider", NAME, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("received_at", US, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_unmatched_receipts"),
    )
    op.create_index("ix_unmatched_receipts_received", "unmatched_receipts", ["received_at"])


def downgrade() -> None:
    """Drop everything the first schema created."""
    for table in ("unmatched_receipts", "limit_hits", "provider_state", "idempotency",
                  "attempts", "recipients", "messages"):
        op.drop_table(table)
