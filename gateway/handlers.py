"""HTTP handlers for the API: sending, records, status, health, metrics and admin."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.dashboard import record_page, wants_html
from gateway.keys import callbacks_key, gateway_key
from gateway.openapi import openapi_json
from gateway.problems import Problem, json_reply
from gateway.records import list_query, view
from gateway.rights import Caller
from gateway.service import Gateway, Reply
from gateway.status import provider_status, ready, recent_sends, status_document
from gateway.store import BadQueryError, StoreError
from gateway.validate import Aborted, read_json

log = logging.getLogger(__name__)

def caller(request: web.Request) -> Caller:
    """Who the request's API key says it is; Problem 401 when auth is on and it is wrong."""
    given = request.headers.get("X-API-Key", "")
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    return request.app[gateway_key].caller(given)


def authorized(request: web.Request, right: str) -> Caller:
    """The caller, if its key has ``right``: 401 for no or a wrong key, 403 for one without."""
    found = caller(request)
    if not found.may(right):
        raise Problem(403, f"this API key does not have the {right!r} right", slug="forbidden",
                      right=right)
    return found


def admin(request: web.Request) -> None:
    """The operator routes' check (``/admin/*``, ``/_emulator*``): the ``admin`` right."""
    authorized(request, "admin")


def _response(reply: Reply) -> web.Response:
    response = json_reply(reply.status, reply.body, reply.retry_after)
    if reply.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


async def send_sms(request: web.Request) -> web.Response:
    """POST /sms (and the seed's POST /api/sms), counted by the status it is answered with."""
    gateway = request.app[gateway_key]
    status: int | str = 500  # anything unforeseen becomes the middleware's 500
    try:
        response = await _send(request, gateway)
        status = response.status
        return response
    except (Problem, web.HTTPException) as exc:
        status = exc.status
        raise
    except Aborted as exc:
        # The client's doing, like nginx's 499: no traceback, and nobody to read an answer.
        status = "aborted"
        log.debug("%s %s: the client closed the connection mid-body (%s)",
                  request.method, request.path, exc)
        return web.Response(status=499, reason="Client Closed Request")
    except asyncio.CancelledError:
        status = "aborted"  # the caller went away (handler cancellation): nothing was answered
        raise
    finally:
        gateway.observer.on_request(status)


async def _send(request: web.Request, gateway: Gateway) -> web.Response:
    caller_id = authorized(request, "send").id
    body = await read_json(request)
    snapshot = gateway.runtime.snapshot  # the whole send runs on the config it began with
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        # aiohttp keeps bytes that are not UTF-8 as surrogates, which the store cannot take:
        # the same bytes always give the same (escaped) text
        key = key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if key is not None and (not key or len(key) > 255):
        raise Problem(400, "Idempotency-Key must be 1-255 characters", slug="invalid-request")
    return _response(await gateway.send(snapshot, body, caller_id, key))


async def get_sms(request: web.Request) -> web.Response:
    """GET /sms/{id}: the stored record; the caller's own unless ``read_all``, numbers masked
    unless ``read_numbers``."""
    gateway = request.app[gateway_key]
    reader = authorized(request, "read")
    record = await gateway.record(request.match_info["id"], reader)
    if record is None:
        raise Problem(404, "no send with this id is retained", slug="not-found")
    shown = view(record, numbers=reader.may("read_numbers"))
    if wants_html(request):  # the dashboard's link, followed by a browser
        return record_page(request, shown)
    return web.json_response(shown)


async def list_sms(request: web.Request) -> web.Response:
    """GET /sms: a page of records, newest first; 400 naming a filter that is wrong."""
    gateway = request.app[gateway_key]
    reader = authorized(request, "read")
    own = None if reader.may("read_all") else reader.id
    try:
        query = list_query(request.query, gateway.runtime.config.region, own)
        page = await gateway.records(query)
    except BadQueryError as exc:
        raise Problem(400, str(exc), slug="invalid-query", field=exc.field) from None
    numbers = reader.may("read_numbers")
    return web.json_response({"items": [view(r, numbers=numbers) for r in page.items],
                              "next_cursor": page.next_cursor})


async def status(request: web.Request) -> web.Response:
    gateway = request.app[gateway_key]
    doc = status_document(gateway)
    doc["callbacks"] = request.app[callbacks_key].status()
    doc["limits"] = await gateway.limiter.status(gateway.store, gateway.runtime.config)
    if request.query.get("recent"):
        doc["recent"] = await recent_sends(gateway)
    return web.json_response(doc)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    gateway = request.app[gateway_key]
    try:
        await gateway.store.check()
    except StoreError as exc:
        raise Problem(503, f"the message store is unavailable: {exc}",
                      slug="store-unavailable") from None
    if ready(gateway):
        return web.json_response({"status": "ready"})
    raise Problem(503, "no provider can take traffic now", slug="not-ready")


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[gateway_key].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def admin_breaker(request: web.Request) -> web.Response:
    """POST /admin/providers/{name}/open|close|reset."""
    gateway = request.app[gateway_key]
    admin(request)  # the guard checked it already; kept here so no route is left open
    name, action = request.match_info["name"], request.match_info["action"]
    member = gateway.runtime.member(name)
    if member is None:
        raise Problem(404, f"no provider named {name!r}", slug="not-found")
    if action == "open":
        member.breaker.force_open()
    elif action == "close":
        member.breaker.force_close()
    elif action == "reset":
        member.breaker.force_close()
        member.stats.reset()
    else:
        raise Problem(404, "the action must be open, close or reset", slug="not-found")
    await gateway.keep_forced(name, member.breaker.forced)
    return web.json_response(provider_status(gateway, member))


async def admin_limits_clear(request: web.Request) -> web.Response:
    """POST /admin/limits/clear ``{"number": "+86..."}``: forget one number's limit counts."""
    gateway = request.app[gateway_key]
    admin(request)  # the guard checked it already; kept here so no route is left open
    body = await read_json(request)
    if not isinstance(body, dict) or set(body) != {"number"} \
            or not isinstance(body["number"], str):
        raise Problem(400, 'send {"number": "+8613800138000"}', slug="invalid-request")
    return web.json_response(
        await gateway.limiter.clear(gateway.store, gateway.runtime.config, body["number"]))


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/sms", send_sms)
    app.router.add_post("/api/sms", send_sms)
    app.router.add_get("/sms", list_sms)
    app.router.add_get("/sms/{id}", get_sms)
    app.router.add_get("/status", status)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/admin/providers/{name}/{action}", admin_breaker)
    app.router.add_post("/admin/limits/clear", admin_limits_clear)
    app.router.add_get("/openapi.json", openapi_json)
