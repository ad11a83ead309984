"""The app factory: it wires the sending service, routes, middlewares and background tasks.

Nothing imports this module back: the service (:mod:`gateway.service`) sends, the handlers
(:mod:`gateway.handlers`) translate HTTP, and both are reached from here only.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from gateway import dashboard, handlers, reload
from gateway.callbacks import CallbackSender
from gateway.config import MAX_BODY_BYTES, Config
from gateway.connections import body_deadline
from gateway.keys import callbacks_key, gateway_key
from gateway.problems import problem_middleware
from gateway.receipt_routes import setup_receipt_routes
from gateway.service import Gateway
from gateway.websec import guard

if TYPE_CHECKING:
    from gateway.emulators import EmulatorServer


def create_app(
    config: Config,
    *,
    config_path: Path | None = None,
    loader: Callable[[], Config] | None = None,
    emulators: Mapping[str, EmulatorServer] | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    watch: bool = False,
) -> web.Application:
    """Build the app; nothing starts until it runs (session, providers, config watcher)."""
    if config_path is not None:
        config_path = config_path.resolve()  # the watcher matches changes by this path
    gateway = Gateway(config, config_path=config_path, loader=loader, emulators=emulators,
                      clock=clock, wall_clock=wall_clock)
    app = web.Application(middlewares=[problem_middleware, guard(handlers.admin),
                                       body_deadline],
                          client_max_size=MAX_BODY_BYTES)
    app[gateway_key] = gateway
    app.cleanup_ctx.append(_running)
    app[callbacks_key] = CallbackSender(gateway)
    app.cleanup_ctx.append(_delivering)  # after _running: starts later, stops sooner
    app.on_shutdown.append(_shutting_down)
    handlers.setup_routes(app)
    setup_receipt_routes(app)
    dashboard.setup(app)
    if gateway.emulators:
        from gateway.emulators import control_routes  # only an emulated gateway loads them

        app.add_routes(control_routes(gateway.emulators))
    if watch and config_path is not None and loader is not None:
        app.cleanup_ctx.append(reload.watcher)
    return app


async def _running(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the service's session and providers live as long as the app runs."""
    async with app[gateway_key].running():
        yield


async def _delivering(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: status callbacks are delivered while the store is open."""
    async with app[callbacks_key].running():
        yield


async def _shutting_down(app: web.Application) -> None:
    app[gateway_key].shutting_down()


def create_app_by_config(config: Config) -> web.Application:
    """The seed's factory name, for code written against the seed: ``create_app(config)``."""
    return create_app(config)
