"""The durable message store: one SQLAlchemy async Core code path on SQLite or PostgreSQL.

Nothing here knows about HTTP: the service calls ``Store.records``, ``Store.idempotency`` and
``Store.providers``; handlers never build SQL.
"""

from gateway.store.errors import (
    BadQueryError,
    CorruptStoreError,
    SchemaTooNewError,
    StoreClosedError,
    StoreConfigError,
    StoreError,
    StoreUnavailableError,
    UnknownMessageError,
)
from gateway.store.idempotency import Claim, KeyConflict, New, Recovered, Replay, body_hash
from gateway.store.interrupted import Settled
from gateway.store.models import (
    FINAL,
    STATUSES,
    AttemptEnd,
    ListQuery,
    MessageRecord,
    NewMessage,
    Page,
    Recipient,
    StoredAttempt,
)
from gateway.store.provider_state import ProviderState
from gateway.store.receipts import Applied, DeliveryReport, MovedMessage, ReceiptOutcome
from gateway.store.store import Store, open_store, upgrade

__all__ = [
    "FINAL",
    "STATUSES",
    "Applied",
    "AttemptEnd",
    "BadQueryError",
    "Claim",
    "CorruptStoreError",
    "DeliveryReport",
    "KeyConflict",
    "ListQuery",
    "MessageRecord",
    "MovedMessage",
    "New",
    "NewMessage",
    "Page",
    "ProviderState",
    "ReceiptOutcome",
    "Recipient",
    "Recovered",
    "Replay",
    "SchemaTooNewError",
    "Settled",
    "Store",
    "StoreClosedError",
    "StoreConfigError",
    "StoreError",
    "StoreUnavailableError",
    "StoredAttempt",
    "UnknownMessageError",
    "body_hash",
    "open_store",
    "upgrade",
]
