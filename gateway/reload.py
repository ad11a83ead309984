"""Live config: reload on file change (watchfiles) or SIGHUP; a bad edit keeps the running one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web
from watchfiles import Change, awatch

from gateway.app import Gateway
from gateway.config import Config, ConfigError
from gateway.keys import gateway_key

log = logging.getLogger(__name__)


async def reload_now(gateway: Gateway) -> bool:
    """Load the config file again and swap it in if valid; say why not otherwise."""
    if gateway.loader is None:
        return False
    async with gateway.reload_lock:
        return await _reload(gateway, gateway.loader)


async def _reload(gateway: Gateway, loader: Callable[[], Config]) -> bool:
    runtime = gateway.runtime
    try:
        config = await asyncio.to_thread(loader)
        runtime.apply(config)
    except Exception as exc:  # also a custom provider whose constructor raises: never fatal
        why = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
        runtime.reject(why)
        gateway.metrics.reloads.labels("rejected").inc()
        log.error("config reload rejected; still running generation %d:\n%s",
                  runtime.reload.generation, why)
        return False
    gateway.metrics.reloads.labels("applied").inc()
    log.info("config reloaded from %s (generation %d)", config.source, runtime.reload.generation)
    return True


async def _watch(gateway: Gateway, path: Path, stop: asyncio.Event) -> None:
    target = path

    def relevant(_change: Change, changed: str) -> bool:
        return Path(changed).name == target.name

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
