"""``storage.url`` parsing: which engine, which file, and how to show it without the password."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from gateway.store.errors import StoreConfigError

Kind = Literal["sqlite", "postgresql", "memory"]

# user:password@ in anything URL-shaped: what ``shown`` and error messages must never carry
_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):\S*@", re.I)


def hide_password(text: str) -> str:
    """``text`` with every ``scheme://user:password@`` written as ``scheme://user:***@``."""
    return _CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", text)


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A parsed storage URL: the SQLAlchemy async URL plus what the engine set-up needs."""

    kind: Kind
    url: URL
    path: Path | None = None  # the SQLite file, absolute

    @property
    def shown(self) -> str:
        """The URL as logs and errors may show it: the password replaced by ``***``."""
        if self.kind == "memory":
            return "memory"
        return self.url.render_as_string(hide_password=True)


def parse(text: str, base: Path | None = None) -> StoreURL:
    """Read ``memory``, ``sqlite:///relative`` (against ``base``), ``sqlite:////abs`` or
    ``postgresql://user:pass@host/db``; anything else is a StoreConfigError."""
    text = text.strip()
    if text == "memory":
        return StoreURL("memory", make_url("sqlite+pysqlite://"))
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("sqlite", "sqlite+pysqlite"):
        return _sqlite(text, base)
    if scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        return _postgresql(text)
    raise StoreConfigError(
        f"storage.url {hide_password(text)!r}: expected memory, sqlite:///PATH or "
        "postgresql://USER:PASSWORD@HOST/DB")


def _sqlite(text: str, base: Path | None) -> StoreURL:
    rest = text.split("://", 1)[1]
    if not rest.startswith("/") or rest == "/":
        raise StoreConfigError(
            f"storage.url {text!r}: a SQLite URL is sqlite:///relative/path or sqlite:////abs/path")
    raw = rest[1:].split("?", 1)[0]
    path = Path(raw)
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    path = path.absolute()
    return StoreURL("sqlite", URL.create("sqlite+pysqlite", database=str(path)), path)


def _postgresql(text: str) -> StoreURL:
    if text.split("://", 1)[1].split("/", 1)[0].count("@") > 1:
        raise StoreConfigError(
            f"storage.url {scrub(text, text)!r}: write @ in the user or password as %40")
    try:
        url = make_url(text)
        url.port  # noqa: B018 - a bad port only raises when read
    except (ArgumentError, ValueError) as exc:
        raise StoreConfigError(
            f"storage.url {scrub(text, text)!r} is not a valid PostgreSQL URL: "
            f"{scrub(str(exc), text)}") from None
    if not url.database:
        raise StoreConfigError(f"storage.url {scrub(text, text)!r} names no database")
    return StoreURL("postgresql", url.set(drivername="postgresql+asyncpg"))


def scrub(message: str, url_text: str) -> str:
    """``message`` with the password of ``url_text`` nowhere in it, however it was quoted."""
    message = hide_password(message)
    match = re.search(r"://[^/@\s:]*:(?P<pw>\S+)@", url_text)
    if match:
        password = match.group("pw")
        message = message.replace(password, "***")
        unquoted = unquote(password)
        if unquoted:
            message = message.replace(unquoted, "***")
    return message
