"""Live config: reload on file change (watchfiles) or SIGHUP; a bad edit keeps the running one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web
from watchfiles import Change, awatch

from gateway.config import Config, ConfigError
from gateway.keys import gateway_key
from gateway.logs import reload_logging
from gateway.service import Gateway

log = logging.getLogger(__name__)


async def reload_now(gateway: Gateway) -> bool:
    """Load the config file again and swap it in if valid; say why not otherwise."""
    if gateway.loader is None:
        return False
    async with gateway.reload_lock:
        return await _reload(gateway, gateway.loader)


async def _reload(gateway: Gateway, loader: Callable[[], Config]) -> bool:
    runtime = gateway.runtime
    before = runtime.config.server
    try:
        # Off the loop: reading and checking a large or hostile file must not stall sends.
        config = await asyncio.to_thread(loader)
        # Open a changed log file before anything is applied: failing, the reload is refused.
        apply_logging = await asyncio.to_thread(reload_logging, config.logging)
        runtime.apply(config)
    except Exception as exc:  # also a custom provider whose constructor raises: never fatal
        why = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
        runtime.reject(why)
        gateway.observer.on_reload("rejected")
        log.error("config reload rejected; still running generation %d:\n%s",
                  runtime.reload.generation, why)
        return False
    await asyncio.to_thread(apply_logging)  # drains queued lines into the old outputs first
    gateway.observer.on_reload("applied")
    log.info("config reloaded from %s (generation %d)", config.source, runtime.reload.generation)
    later = [f"server.{key}" for key in AT_START
             if getattr(before, key) != getattr(config.server, key)]
    if later:
        log.warning("%s changed: applied at the next start (the socket is already open)",
                    ", ".join(later))
    return True


AT_START = ("header_timeout", "max_connections")  # read when the socket opens


def config_files(path: Path) -> Callable[[Change, str], bool]:
    """A watchfiles filter passing the config file and its ``--env`` overlays only.

    Anything else in the folder (the log file above all) must not wake the watcher: at DEBUG,
    each wake-up is logged, and a log line in a watched file is another wake-up.
    """
    folder, prefix = path.parent, f"{path.stem}."

    def relevant(_change: Change, changed: str) -> bool:
        file = Path(changed)
        return file.parent == folder and (file.name == path.name or (
            file.name.startswith(prefix) and file.suffix == path.suffix))

    return relevant


async def _watch(gateway: Gateway, path: Path, stop: asyncio.Event) -> None:
    target = path
    relevant = config_files(target)

    # Watch the directory, not the file: editors save by writing a new file and renaming it.
    async for _changes in awatch(target.parent, watch_filter=relevant, stop_event=stop,
                                 debounce=300, recursive=False):
        await reload_now(gateway)


async def watcher(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: watch the config file while the app runs."""
    gateway = app[gateway_key]
    assert gateway.config_path is not None
    stop = asyncio.Event()
    task = asyncio.create_task(_watch(gateway, gateway.config_path, stop))
    yield
    stop.set()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
