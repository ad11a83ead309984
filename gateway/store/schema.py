"""The tables, as SQLAlchemy Core sees them; migrations/ creates them (a test keeps both equal).

Times are whole microseconds since the Unix epoch (BigInteger): exact on both engines, so a
keyset cursor compares equal to what it was read from, and sorting needs no time zones.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    text,
)

# Constraint names fixed by convention, so migrations on both engines name them alike.
metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

ID = String(64)
NAME = String(128)

messages = Table(
    "messages", metadata,
    Column("id", ID, primary_key=True),
    Column("caller", NAME, nullable=False),
    Column("template", NAME, nullable=False),
    Column("numbers", Text, nullable=False),  # JSON list of E.164, in the caller's order
    Column("params", Text),  # JSON object; NULL once erased at the final status
    Column("mode", String(16), nullable=False),  # sync | async
    Column("status", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("final_at", BigInteger),
    Column("expires_at", BigInteger),  # async ttl: expired when not sent by then
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", BigInteger),  # outbox: not before this
    Column("lease_until", BigInteger),  # outbox: a worker's claim, taken again once past
    Column("lease_owner", String(64)),
    Column("callback_url", Text),
    Column("idempotency_key", String(255)),
    Column("provider", NAME),
    Column("provider_message_id", String(255)),
    Column("error", Text),
)
Index("ix_messages_created", messages.c.created_at, messages.c.id)
Index("ix_messages_status_created", messages.c.status, messages.c.created_at)
Index("ix_messages_template_created", messages.c.template, messages.c.created_at)
Index("ix_messages_caller_created", messages.c.caller, messages.c.created_at)
# The outbox scans only queued/sending rows; a partial index keeps it small on both engines.
_OUTBOX = text("status IN ('queued', 'sending')")
Index("ix_messages_outbox", messages.c.next_attempt_at,
      sqlite_where=_OUTBOX, postgresql_where=_OUTBOX)

# One row per recipient: searched by number (GET /sms?to=), matched by receipts (SPEC §9).
recipients = Table(
    "recipients", metadata,
    Column("message_id", ID, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    Column("number", String(32), primary_key=True),
    Column("created_at", BigInteger, nullable=False),  # the message's, for the index below
    Column("provider_message_id", String(255)),  # per recipient where the provider gives one
    Column("status", String(16)),  # NULL until a receipt: delivered | undelivered
    Column("code", String(64)),
    Column("at", BigInteger),
)
Index("ix_recipients_number_created", recipients.c.number, recipients.c.created_at,
      recipients.c.message_id)
Index("ix_recipients_provider_message", recipients.c.provider_message_id)

attempts = Table(
    "attempts", metadata,
    Column("message_id", ID, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("provider", NAME, nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger),  # NULL: started, never finished (a crash: maybe sent)
    Column("outcome", String(16)),
    Column("error", Text),
    Column("provider_message_id", String(255)),
)

idempotency = Table(
    "idempotency", metadata,
    Column("caller", NAME, primary_key=True),
    Column("key", String(255), primary_key=True),  # the primary key is what makes claims race-safe
    Column("body_hash", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # in_flight | done
    Column("message_id", ID),
    Column("status_code", Integer),
    Column("response", Text),  # JSON of the first answer
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)
Index("ix_idempotency_expires", idempotency.c.expires_at)

provider_state = Table(
    "provider_state", metadata,
    Column("name", NAME, primary_key=True),
    Column("disabled_until", BigInteger),  # account-level error: NULL when not disabled
    Column("forced_open", Boolean, nullable=False, server_default=false()),
    Column("reason", Text),
    Column("updated_at", BigInteger, nullable=False),
)

# Limits (SPEC §10): one row per counted send, so a sliding window is a range count.
limit_hits = Table(
    "limit_hits", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("bucket", String(255), nullable=False),  # e.g. "number:verify_code:+86138…"
    Column("at", BigInteger, nullable=False),
    Column("message_id", ID),
)
Index("ix_limit_hits_bucket_at", limit_hits.c.bucket, limit_hits.c.at)

# Receipts that arrived before their send's record (SPEC §9): kept an hour, then dropped.
unmatched_receipts = Table(
    "unmatched_receipts", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("provider", NAME, nullable=False),
    Column("payload", Text, nullable=False),
    Column("received_at", BigInteger, nullable=False),
)
Index("ix_unmatched_receipts_received", unmatched_receipts.c.received_at)


# -- outbox (SPEC §8; migration r0002) ------------------------------------------------------

# How often the outbox put a message back after a failure (its backoff's exponent), and why a
# queued message waits: "backoff" or "providers_open" (every provider's breaker is open).
messages.append_column(Column("retries", Integer, nullable=False, server_default=text("0")))
messages.append_column(Column("waiting", String(16)))
# Async messages not yet final: expiry, depth, oldest and "waiting for providers" read these
# instead of scanning a deep queue (gateway/store/outbox.py names them in INDEXED BY).
_QUEUED = text("status IN ('queued', 'sending') AND next_attempt_at IS NOT NULL")
Index("ix_messages_outbox_expires", messages.c.expires_at,
      sqlite_where=_QUEUED, postgresql_where=_QUEUED)
Index("ix_messages_outbox_created", messages.c.created_at,
      sqlite_where=_QUEUED, postgresql_where=_QUEUED)
Index("ix_messages_outbox_waiting", messages.c.waiting,
      sqlite_where=_QUEUED, postgresql_where=_QUEUED)

# -- status callbacks (SPEC §8; migration r0003) ----------------------------------------------

# Callbacks waiting to be POSTed: a row per (message, event), deleted once delivered or given
# up. No foreign key: a callback outlives nothing (24 h) and the retention purge never waits.
callbacks = Table(
    "callbacks", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("message_id", ID, nullable=False),
    Column("url", Text, nullable=False),
    Column("event", String(16), nullable=False),  # final | delivery
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),  # given up 24 h after this
    Column("lease_until", BigInteger),  # a sender's claim, taken again once past
    Column("lease_owner", String(64)),
    Column("last_error", Text),
)
Index("ix_callbacks_next_attempt", callbacks.c.next_attempt_at)

# -- delivery receipts (SPEC §9; migration r0004) ---------------------------------------------

# -- limits (SPEC §10; migration r0005) -------------------------------------------------------

# Each hit's place in its bucket, 1, 2, 3, ... in time order (``at`` rises strictly within a
# bucket): the count in a window is the last place minus the first place inside it, plus one,
# found by two index seeks on (bucket, at) however many hits came before (gateway/store/limits.py).
limit_hits.append_column(Column("seq", BigInteger, nullable=False, server_default=text("0")))

# Requests a limit refused: /status and the dashboard count them by rule over the last hour.
limit_refusals = Table(
    "limit_refusals", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("rule", NAME, nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("message_id", ID),
)
Index("ix_limit_refusals_at", limit_refusals.c.at)

# -- replicas (SPEC §11; migration r0006) -----------------------------------------------------

# One row per running gateway process (host:pid:random), rewritten every few seconds: who is
# alive, and each one's breaker view (breakers count failures per process).
replicas = Table(
    "replicas", metadata,
    Column("id", String(160), primary_key=True),
    Column("started_at", BigInteger, nullable=False),
    Column("seen_at", BigInteger, nullable=False),
    Column("version", String(64), nullable=False),
    Column("breakers", Text, nullable=False),  # JSON: provider -> {state, forced, reason}
)
Index("ix_replicas_seen_at", replicas.c.seen_at)


def to_us(seconds: float) -> int:
    """Unix seconds -> the stored whole microseconds."""
    return round(seconds * 1_000_000)


def from_us(micros: int | None) -> float | None:
    """Stored microseconds -> Unix seconds (None stays None)."""
    return None if micros is None else micros / 1_000_000
