"""HTTP for delivery receipts: ``POST /receipts/aliyun/{token}``, ``POST /receipts/huawei/{token}``.

Providers call these, not people: no API key (the token in the path is their proof), no JSON
content-type rule (Huawei posts a form; see gateway/websec.py). Answers are what each provider
expects: Aliyun ``{"code": 0, "msg": "ok"}`` or 400 for a push it should not retry unchanged;
Huawei an empty 200 even for a push we cannot read (logged), so it does not resend garbage.
A store that cannot be written answers 503: both providers try again later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import ContentLengthError, PayloadEncodingError

from gateway.keys import gateway_key, receipts_key
from gateway.problems import Problem
from gateway.receipt_wire import MAX_BODY, BadReceipt, parse_aliyun, parse_huawei
from gateway.receipts import ReceiptDesk, running
from gateway.storage import available

log = logging.getLogger("gateway.receipts")
_CHUNK = 64 * 1024


def _desk(request: web.Request, kind: str) -> ReceiptDesk:
    """The desk, if the path's token is right: else 404 (as for any unknown path), logged
    with where it came from. Nothing is read or changed for a wrong token."""
    desk = request.app[receipts_key]
    if not desk.admits(kind, request.match_info["token"]):
        log.warning("%s receipt refused: wrong token or receipts off (from %s)", kind,
                    request.remote)
        raise Problem(404, "not found", slug="not-found")
    return desk


async def _body(request: web.Request) -> bytes:
    """The whole body within server.body_timeout and MAX_BODY bytes (413 beyond)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise Problem(413, f"a receipt push is at most {MAX_BODY} bytes", slug="body-too-large")
    timeout = request.app[gateway_key].runtime.config.server.body_timeout
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_chunked(_CHUNK):
                size += len(chunk)
                if size > MAX_BODY:
                    raise Problem(413, f"a receipt push is at most {MAX_BODY} bytes",
                                  slug="body-too-large")
                chunks.append(chunk)
    except TimeoutError:
        raise Problem(408, f"the request body did not arrive within {timeout:g}s",
                      slug="request-timeout") from None
    except (ConnectionError, PayloadEncodingError, ContentLengthError):
        raise Problem(400, "the body was cut short", slug="invalid-receipt") from None
    return b"".join(chunks)


async def aliyun(request: web.Request) -> web.Response:
    """Aliyun SmsReport: a JSON array of reports (providers.md §1.8)."""
    desk = _desk(request, "aliyun")
    try:
        reports, unknown = parse_aliyun(await _body(request))
    except BadReceipt as exc:
        desk.invalid("aliyun")
        log.warning("aliyun receipt push refused (400): %s", exc)
        raise Problem(400, f"not an SmsReport push: {exc}", slug="invalid-receipt") from None
    if unknown:
        log.info("aliyun receipts carry fields this gateway does not know (ignored): %s",
                 ", ".join(sorted(unknown)[:10]))
    if reports:
        await available(desk.take(reports))
    return web.json_response({"code": 0, "msg": "ok"})


async def huawei(request: web.Request) -> web.Response:
    """Huawei statusCallback: one report as form fields (providers.md §2.7)."""
    desk = _desk(request, "huawei")
    body = await _body(request)
    try:
        report, unknown = parse_huawei(body)
    except BadReceipt as exc:
        desk.invalid("huawei")
        log.warning("huawei receipt push ignored (answered 200): %s", exc)
        return web.Response(status=200)
    if unknown:
        log.info("huawei receipt carries fields this gateway does not know (ignored): %s",
                 ", ".join(sorted(unknown)[:10]))
    await available(desk.take([report]))
    return web.Response(status=200)


_TOKEN = {"name": "token", "in": "path", "required": True, "schema": {"type": "string"},
          "description": "receipts.token (a secret: it is the provider's proof)"}
_ANY: dict[str, Any] = {"schema": {"type": "object"}}
# /openapi.json's entries for the two routes (gateway/openapi.py adds them to its paths).
OPENAPI_PATHS: dict[str, Any] = {
    "/receipts/aliyun/{token}": {"post": {
        "operationId": "aliyunReceipts", "summary": "Aliyun SmsReport push (JSON array)",
        "parameters": [_TOKEN], "security": [{}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "array", "maxItems": 1000, "items": {"type": "object"}}}}},
        "responses": {
            "200": {"description": '{"code": 0, "msg": "ok"}', "content": {
                "application/json": _ANY}},
            "400": {"description": "not an SmsReport push (nothing applied)"},
            "404": {"description": "wrong token, or receipts are off"},
            "413": {"description": "over 1 MiB"},
            "503": {"description": "the store cannot be written: retry"}}}},
    "/receipts/huawei/{token}": {"post": {
        "operationId": "huaweiReceipts", "summary": "Huawei statusCallback (form fields)",
        "parameters": [_TOKEN], "security": [{}],
        "requestBody": {"required": True, "content": {
            "application/x-www-form-urlencoded": _ANY}},
        "responses": {
            "200": {"description": "taken (an unreadable push is logged, also 200)"},
            "404": {"description": "wrong token, or receipts are off"},
            "413": {"description": "over 1 MiB"},
            "503": {"description": "the store cannot be written: retry"}}}},
}


def setup_receipt_routes(app: web.Application) -> None:
    """The two receipt routes, and the desk behind them."""
    app[receipts_key] = ReceiptDesk(app[gateway_key])
    app.router.add_post("/receipts/aliyun/{token}", aliyun)
    app.router.add_post("/receipts/huawei/{token}", huawei)
    app.cleanup_ctx.append(_passing)


async def _passing(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the parked receipts' pass, after the store opens, stopped before it closes."""
    async with running(app[receipts_key]):
        yield
