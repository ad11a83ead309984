"""What can go wrong with the store, in words an operator can act on."""

from __future__ import annotations


class StoreError(Exception):
    """Base class: every store failure the service may want to translate."""


class StoreConfigError(StoreError):
    """The storage URL or its file cannot be used (exit 2 at start): names the path or URL."""


class CorruptStoreError(StoreConfigError):
    """The SQLite file exists but is not a usable database; it is never recreated."""


class SchemaTooNewError(StoreConfigError):
    """The database was migrated by a newer gateway than this one."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached or written right now (disk full, server down)."""


class StoreClosedError(StoreUnavailableError):
    """The store was closed; nothing more is written."""


class BadQueryError(ValueError):
    """A list filter the store cannot use; ``field`` names it (for a 400 naming the field)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


class UnknownMessageError(KeyError):
    """A write named a message id that is not in the store."""
