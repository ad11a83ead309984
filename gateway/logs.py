"""The seed's logger: console first, then a rotating file; numbers masked in every line."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from gateway.config import LoggingConfig
from gateway.phones import mask_text

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class MaskingFormatter(logging.Formatter):
    """Masks every phone number in the finished line: message, arguments and traceback alike."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_text(super().format(record))


def _handler(handler: logging.Handler) -> logging.Handler:
    handler.setFormatter(MaskingFormatter(FORMAT))
    return handler


def setup_console(level: str = "INFO") -> None:
    """Before anything else can fail: a console handler on the root logger."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_sms_gateway", False)]:
        root.removeHandler(old)
    handler = _handler(logging.StreamHandler())
    handler._sms_gateway = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def setup_file(config: LoggingConfig, level: str | None = None) -> Path | None:
    """Add the rotating file from ``logging`` in config.yaml; returns its path."""
    root = logging.getLogger()
    root.setLevel((level or config.level).upper())
    if not config.file:
        return None
    path = Path(config.file)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _handler(logging.handlers.RotatingFileHandler(
        path, maxBytes=config.max_bytes, backupCount=config.backups, encoding="utf-8"))
    handler._sms_gateway = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    return path
