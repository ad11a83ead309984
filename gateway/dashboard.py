"""``GET /``: the dashboard, server-rendered with aiohttp-jinja2 and refreshed by a small script."""

from __future__ import annotations

import datetime as dt
from importlib.resources import files
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from gateway.keys import gateway_key
from gateway.status import recent_sends, status_document

REFRESH_SECONDS = 3


def _clock(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp).strftime("%H:%M:%S")


def _ago(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    seconds = max(0, int(dt.datetime.now().timestamp() - timestamp))
    if seconds < 60:
        return f"{seconds}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


async def dashboard(request: web.Request) -> web.Response:
    """The page; ``?partial=1`` renders only the live section, which the script swaps in."""
    gateway = request.app[gateway_key]
    context: dict[str, Any] = {
        "status": status_document(gateway),
        "recent": recent_sends(gateway),
        "emulators": {k: s.state.snapshot() for k, s in gateway.emulators.items()},
        "refresh": REFRESH_SECONDS,
    }
    name = "_live.html" if request.query.get("partial") else "dashboard.html"
    response = aiohttp_jinja2.render_template(name, request, context)
    response.headers["Cache-Control"] = "no-store"
    return response


def setup(app: web.Application) -> None:
    """Templates and static files come from the ``web`` package, so they ship in the wheel."""
    root = files("web")
    env = aiohttp_jinja2.setup(
        app, loader=jinja2.FileSystemLoader(str(root / "templates")), autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["clock"] = _clock
    env.filters["ago"] = _ago
    app.router.add_get("/", dashboard, name="dashboard")
    app.router.add_static("/static/", str(root / "static"), name="static")
