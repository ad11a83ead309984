"""``GET /``: the dashboard, server-rendered with aiohttp-jinja2 and refreshed by a small script."""

from __future__ import annotations

import json
import time
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any, Final

import aiohttp_jinja2
import jinja2
from aiohttp import web

from gateway import charts
from gateway.config import Config
from gateway.emulators.state import MODES
from gateway.keys import callbacks_key, gateway_key
from gateway.problems import Problem
from gateway.status import recent_sends, status_document
from gateway.store import STATUSES

REFRESH_SECONDS: Final = 3
LATENCY_MODE_MS: Final = 2000  # what the dashboard's "latency" choice sets; below no timeout
# What each emulator mode makes the provider do, for the dashboard's mode menu.
_MODE_EFFECTS: Final = {
    "ok": "accepts every message",
    "fail": "provider system error",
    "reject": "invalid number: the caller's fault",
    "throttle": "provider throttling",
    "limit": "per-recipient limit",
    "disabled": "account disabled",
    "down": "refuses connections",
    "hang": "never answers",
    "latency": f"answers after {LATENCY_MODE_MS} ms",
    "garbage": "200 with a body cut short: not JSON",
    "html": "a proxy's HTML 502 page",
    "unknown_code": "an error code no client knows",
    "huge": "a 10 MB answer",
    "reset": "resets the connection mid-answer",
    "drip": "answers one byte at a time",
}
# The recent sends' status filter offers every status, in lifecycle order (SPEC §7).
LIFECYCLE: Final = ("queued", "sending", "sent", "delivered", "undelivered", "failed",
                    "rejected", "unknown", "expired", "rate_limited")
# Every mode the emulators have, in their order: a mode added there shows up here too.
EMULATOR_MODES: Final = tuple((mode, _MODE_EFFECTS.get(mode, mode)) for mode in MODES)


def _clock(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%H:%M:%S")


def _duration(seconds: float) -> str:
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


def _relative(timestamp: float | None) -> str:
    """``12s ago`` for the past, ``in 12s`` for the future, ``never`` for None."""
    if timestamp is None:
        return "never"
    delta = timestamp - time.time()
    text = _duration(abs(delta))
    return f"in {text}" if delta > 0.5 else f"{text} ago"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def _example_body(config: Config) -> str:
    """The JSON body of the "how to send" hint, for a template this config really has."""
    names = sorted(config.templates)
    name = "verify_code" if "verify_code" in config.templates else (names or ["verify_code"])[0]
    template = config.templates.get(name)
    wanted = template.params if template else ("code",)
    params = {p: "123456" if p == "code" else p for p in wanted}
    body = json.dumps({"to": ["+8613800138000"], "template": name, "params": params})
    return body.replace("'", "'\\''")  # it goes inside single quotes in a shell


async def dashboard(request: web.Request) -> web.Response:
    """The page; ``?partial=1`` renders only the live section, which the script swaps in."""
    gateway = request.app[gateway_key]
    shown = request.query.get("status") or None  # the recent sends' filter (a plain GET form)
    if shown is not None and shown not in STATUSES:
        raise Problem(400, f"status must be one of {', '.join(LIFECYCLE)}", slug="invalid-query",
                      field="status")
    document = status_document(gateway)
    sender = request.app.get(callbacks_key)  # what /status calls "callbacks" (handlers.status)
    document["callbacks"] = sender.status() if sender is not None else None
    document["callbacks_on"] = bool(gateway.runtime.config.server.callback_hosts)
    context: dict[str, Any] = {
        "status": document,
        "recent": await recent_sends(gateway, status=shown),
        "status_filter": shown,
        "statuses": LIFECYCLE,
        "limits": await gateway.limiter.status(gateway.store, gateway.runtime.config),
        "emulators": {k: s.state.snapshot() for k, s in gateway.emulators.items()},
        "modes": EMULATOR_MODES,
        "latency_mode_ms": LATENCY_MODE_MS,
        "refresh": REFRESH_SECONDS,
        "now": time.time(),
        "base_url": f"{request.scheme}://{request.host}",
        "example_body": _example_body(gateway.runtime.config),
        "charts": charts.panels(gateway),  # the last hour per provider, as inline SVG
    }
    name = "_live.html" if request.query.get("partial") else "dashboard.html"
    response = aiohttp_jinja2.render_template(name, request, context)
    response.headers["Cache-Control"] = "no-store"
    return response


def wants_html(request: web.Request) -> bool:
    """A browser's navigation (Accept names text/html before any JSON), not an API client."""
    accept = request.headers.get("Accept", "")
    html, json_ = accept.find("text/html"), accept.find("json")
    return html >= 0 and (json_ < 0 or html < json_)


def record_page(request: web.Request, record: dict[str, Any]) -> web.Response:
    """``GET /sms/{id}`` for a browser: the record (numbers masked) as a page."""
    response = aiohttp_jinja2.render_template("record.html", request, {"r": record})
    response.headers["Cache-Control"] = "no-store"
    return response


def setup(app: web.Application) -> None:
    """Templates and static files come from the ``web`` package, so they ship in the wheel."""
    root = files("web")
    env = aiohttp_jinja2.setup(
        app, loader=jinja2.FileSystemLoader(str(root / "templates")), autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(clock=_clock, ago=_relative, duration=_duration, ms=_ms)
    app.router.add_get("/", dashboard, name="dashboard")
    static = Path(str(root / "static"))
    shipped = {path.name: path for path in static.iterdir() if path.is_file()}

    async def static_file(request: web.Request) -> web.FileResponse:
        # Only the files shipped in web/static; anything else is a problem+json 404, not the
        # empty octet-stream aiohttp's static route answers for a missing file.
        path = shipped.get(request.match_info["filename"])
        if path is None:
            raise Problem(404, "no such file", slug="not-found")
        return web.FileResponse(path)

    app.router.add_get("/static/{filename}", static_file, name="static")
