"""Cross-site request forgery guard for the state-changing routes.

With auth off (the default under ``make run``), any web page open in an operator's browser could
otherwise POST to ``/admin/*`` or ``/_emulator/*``: a ``text/plain`` or body-less POST is a CORS
"simple request" that the browser sends without asking. Requiring ``application/json`` forces a
preflight, which the gateway never grants; a foreign ``Origin`` is refused outright.
"""

from __future__ import annotations

from collections.abc import Callable

import yarl
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.problems import Handler, Problem

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# These read their own body and already answer anything but JSON with 415 (counted in
# sms_requests_total); a browser cannot send them JSON cross-site without a preflight.
SELF_CHECKED = frozenset({"/sms", "/api/sms"})
OPERATOR_PREFIXES = ("/admin/", "/_emulator/")
# Providers post receipts here (Huawei as a form): a secret token in the path is their proof,
# which no page that does not know it can forge, so only a foreign Origin is refused.
PROVIDER_PREFIXES = ("/receipts/",)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _endpoint(host: str, port: int | None, scheme: str) -> tuple[str, int | None]:
    return host.lower().rstrip("."), port if port is not None else _DEFAULT_PORTS.get(scheme)


def same_origin(origin: str, host_header: str) -> bool:
    """Whether ``Origin`` names the host:port the request was sent to (its ``Host``).

    The default port follows the Origin's scheme on both sides: behind a TLS-terminating proxy
    the request reaches us as http while the browser's Origin says https.
    """
    try:
        url = yarl.URL(origin)
        host = yarl.URL(f"//{host_header}")
    except ValueError:
        return False
    if url.scheme not in _DEFAULT_PORTS or not url.host or url.path not in ("", "/") \
            or not host.host:
        return False  # "null" (sandboxed frames, file://) and anything malformed
    return (_endpoint(url.host, url.explicit_port, url.scheme)
            == _endpoint(host.host, host.explicit_port, url.scheme))


def check_unsafe(request: web.Request) -> None:
    """Problem 403 for a foreign Origin, 415 for a body that is not declared JSON."""
    origin = request.headers.get("Origin")
    if origin is not None and not same_origin(origin, request.headers.get("Host", "")):
        raise Problem(403, "cross-origin requests may not change state; send it from the "
                      "gateway's own origin or without an Origin header", slug="forbidden")
    if request.content_type != "application/json" \
            and not request.path.startswith(PROVIDER_PREFIXES):
        raise Problem(415, "send Content-Type: application/json (an empty body is fine)",
                      slug="unsupported-media-type")


def guard(caller: Callable[[web.Request], object] | None = None) -> Middleware:
    """A middleware: :func:`check_unsafe` on every state-changing request; with ``caller``
    (the gateway's check of the ``admin`` right: 401 without a valid key, 403 for a key without
    it) also on the operator routes, ``/admin/*`` and ``/_emulator*``, checked first: a missing
    key is the more useful answer."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.http_exception is not None:
            return await handler(request)  # no such route: its 404/405 says more
        try:
            if caller is not None and is_operator_route(request):
                caller(request)
            if request.method not in SAFE_METHODS and request.path not in SELF_CHECKED:
                check_unsafe(request)
        except Problem as exc:  # answered here: sms-emulator has no problem_middleware
            return exc.response()
        return await handler(request)

    return middleware


def is_operator_route(request: web.Request) -> bool:
    """``/admin/*``, ``/_emulator`` and everything under it."""
    path = request.path
    return path.startswith(OPERATOR_PREFIXES) or path == "/_emulator"
