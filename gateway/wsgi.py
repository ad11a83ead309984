"""Gunicorn entry point, as the seed was deployed:

    SMS_GATEWAY_CONFIG=/etc/sms/config.yaml \\
        gunicorn 'gateway.wsgi:create' -k aiohttp.GunicornWebWorker -b 0.0.0.0:8080

``create`` is an async app factory (aiohttp's worker awaits it in each worker process), so
nothing is built at import. ``SMS_GATEWAY_ENV=NAME`` is ``--env NAME``. Under gunicorn the
listening socket is gunicorn's: its ``--worker-connections`` and ``--keep-alive`` apply, not
``server.max_connections``/``header_timeout``; ``server.body_timeout`` still does.
"""

from __future__ import annotations

import logging
import os
import sys
from functools import partial
from pathlib import Path

from aiohttp import web

from gateway.config import ConfigError, load_config
from gateway.logs import reset_logging, setup_console, setup_file

log = logging.getLogger("gateway")

BOOT_ERROR = 3  # gunicorn stops instead of restarting workers that exit with this


async def create() -> web.Application:
    """Load the config named by SMS_GATEWAY_CONFIG (./config.yaml) and build the app."""
    from gateway.app import create_app

    path = Path(os.environ.get("SMS_GATEWAY_CONFIG") or "config.yaml")
    loader = partial(load_config, path, profile=os.environ.get("SMS_GATEWAY_ENV") or None)
    setup_console(os.environ.get("SMS_GATEWAY_LOG_LEVEL") or None)
    try:
        config = loader()
        setup_file(config.logging)
    except (ConfigError, OSError) as exc:
        print(f"sms-gateway: not starting: {exc}", file=sys.stderr)
        reset_logging()
        raise SystemExit(BOOT_ERROR) from None
    app = create_app(config, config_path=path, loader=loader, watch=True)
    app.on_cleanup.append(_stop_logging)  # after the cleanup contexts: their lines are kept
    log.info("sms-gateway worker %d; config %s", os.getpid(), config.source)
    return app


async def _stop_logging(_app: web.Application) -> None:
    reset_logging()
