"""The seed's logger: console first, then a rotating file; numbers masked in every line.

Nothing happens at import: ``setup_console`` (called first by ``main``) starts the writer,
``setup_file``/``reload_logging`` add or swap the file, ``reset_logging`` stops it at exit.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import re
import threading
from collections.abc import Callable
from pathlib import Path

from gateway.config import LoggingConfig
from gateway.logrepeat import RepeatLimiter
from gateway.phones import mask_text

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class MaskingFormatter(logging.Formatter):
    """Masks every phone number in the finished line: message, arguments and traceback alike."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_text(_RECEIPT_TOKEN.sub(r"\1***", super().format(record)))


# The receipt token is the last part of a receipt URL (an aiohttp error line may quote one).
_RECEIPT_TOKEN = re.compile(r"(/receipts/[a-z]+/)[^/\s?#\"']+")


def _handler(handler: logging.Handler) -> logging.Handler:
    handler.setFormatter(MaskingFormatter(FORMAT))
    return handler


BACKLOG = 4096  # lines; beyond this a caller waits for the writer (memory stays bounded)


_Queue = queue.Queue[logging.LogRecord | None]  # None: QueueListener's sentinel


class _Enqueue(logging.handlers.QueueHandler):
    def __init__(self, lines: _Queue) -> None:
        super().__init__(lines)
        self._lines = lines
        self.limiter = RepeatLimiter()

    def emit(self, record: logging.LogRecord) -> None:
        # Runs under the handler's lock: the limiter needs no lock of its own.
        for admitted in self.limiter.admit(record):
            super().emit(admitted)

    def enqueue(self, record: logging.LogRecord) -> None:
        self._lines.put(record)  # blocks only when BACKLOG lines are waiting: never drops one

    def drain(self) -> None:
        """Write the "repeated N times" summaries still held back (before the writer stops)."""
        self.acquire()
        try:
            for summary in self.limiter.drain():
                super().emit(summary)
        finally:
            self.release()


class _Listener(logging.handlers.QueueListener):
    def __init__(self, lines: _Queue, *outputs: logging.Handler) -> None:
        super().__init__(lines, *outputs, respect_handler_level=True)
        self._lines = lines

    def enqueue_sentinel(self) -> None:
        self._lines.put(None)  # a full queue must not make stopping raise


class _Writer:
    """Root logger -> a queue -> one thread that formats, masks and writes every line.

    Handlers write (and the file handler flushes) on each record: on the event loop, a slow
    disk or a blocked console would stall every send. The loop only enqueues the record; if the
    writer falls BACKLOG lines behind, logging waits for it rather than growing without bound
    or dropping lines (the soak showed a steady backlog at ~1,600 lines/s).
    """

    def __init__(self) -> None:
        self.outputs: list[logging.Handler] = []
        self.console: logging.Handler | None = None
        self.file: logging.Handler | None = None
        self.override: str | None = None  # --log-level: wins over logging.level on reloads
        self.applied: LoggingConfig | None = None
        self._queue: _Queue = queue.Queue(BACKLOG)
        self._entry = _Enqueue(self._queue)
        self._listener: _Listener | None = None

    def route(self, outputs: list[logging.Handler]) -> None:
        self.stop()
        self.outputs = outputs
        root = logging.getLogger()
        if self._entry not in root.handlers:
            root.addHandler(self._entry)
        self._listener = _Listener(self._queue, *outputs)
        self._listener.start()

    def flush(self, timeout: float | None = None) -> None:
        """Return once every line logged so far is written.

        With ``timeout`` (a forced exit), wait at most that long and leave the writer stopped.
        """
        listener = self._listener
        if listener is None:
            return
        if timeout is None:
            listener.stop()  # drains the queue
            listener.start()
            return
        # A stalled output must not hold up a forced exit: drain in a thread, wait a while.
        self._entry.drain()
        drain = threading.Thread(target=listener.stop, daemon=True)
        drain.start()
        drain.join(timeout)

    def stop(self) -> None:
        if self._listener is not None:
            self._entry.drain()
            self._listener.stop()
            self._listener = None

    def reset(self) -> None:
        """No more gateway handlers: the queue's entry is removed and the outputs closed."""
        self.stop()
        logging.getLogger().removeHandler(self._entry)
        for handler in self.outputs:
            handler.close()
        self.outputs = []


_WRITER: _Writer | None = None  # created by setup_console/setup_file, never at import


def _writer() -> _Writer:
    global _WRITER
    if _WRITER is None:
        _WRITER = _Writer()
    return _WRITER


def flush_logs(timeout: float | None = None) -> None:
    """Return once every line logged so far is written (see ``_Writer.flush``)."""
    if _WRITER is not None:
        _WRITER.flush(timeout)


def reset_logging() -> None:
    """Stop the writer (every queued line is written) and detach it; the next setup starts
    afresh. ``main`` calls this on the way out, so nothing depends on ``atexit``."""
    global _WRITER
    if _WRITER is not None:
        _WRITER.reset()
    _WRITER = _Writer()  # inert until routed: no thread, no handler


def setup_console(level: str | None = None) -> None:
    """Before anything else can fail: console output for the root logger (any file is dropped).

    ``level`` is ``--log-level``: it also wins over ``logging.level`` from later config loads.
    """
    writer = _writer()
    writer.override = level.upper() if level else None
    writer.console = _handler(logging.StreamHandler())
    writer.file, writer.applied = None, None
    writer.route([writer.console])
    logging.getLogger().setLevel(writer.override or "INFO")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # watchfiles logs every raw file event at DEBUG; with the log file in the watched folder,
    # each of its lines would be an event, logged, written, an event... forever. Its INFO
    # line per change repeats the gateway's own "config reloaded".
    logging.getLogger("watchfiles").setLevel(logging.WARNING)


def setup_file(config: LoggingConfig, level: str | None = None) -> Path | None:
    """Add the rotating file from ``logging`` in config.yaml; returns its path.

    Raises OSError (one line: which path, why) when the file cannot be opened.
    """
    _writer().override = level.upper() if level else _writer().override
    reconfigure(config, force=True)()
    return Path(config.file) if config.file else None


def reload_logging(config: LoggingConfig) -> Callable[[], None]:
    """Prepare a reload's ``logging`` section (opening the new file may raise OSError); the
    returned function applies it. A no-op when logging was not set up (an embedded app)."""
    if _WRITER is None or not _WRITER.outputs:
        return lambda: None
    return reconfigure(config)


def reconfigure(config: LoggingConfig, *, force: bool = False) -> Callable[[], None]:
    """Open what ``config`` needs now; return the step that swaps it in (cannot fail)."""
    writer = _writer()
    if writer.applied == config and not force:
        return lambda: None
    level = writer.override or config.level.upper()
    new_file = _open_file(config) if config.file else None

    def commit() -> None:
        old = writer.file
        logging.getLogger().setLevel(level)
        writer.file, writer.applied = new_file, config
        writer.route([h for h in (writer.console, new_file) if h is not None])
        if old is not None:
            old.close()

    return commit


def _open_file(config: LoggingConfig) -> logging.Handler:
    assert config.file
    path = Path(config.file)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return _handler(logging.handlers.RotatingFileHandler(
            path, maxBytes=config.max_bytes, backupCount=config.backups, encoding="utf-8"))
    except OSError as exc:
        raise OSError(f"cannot open log file {path}: {exc.strerror or exc}") from None
