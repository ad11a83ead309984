"""The floor: a bare aiohttp proxy that parses JSON, makes one Aliyun call and answers.

``python -m bench.bare_proxy --port P --aliyun URL``. It sends exactly the request the gateway's
Aliyun client sends (the same :class:`providers.aliyun.AliyunProvider`, so the same signing and
the emulator accepts it) over a session pooled like the gateway's, and does nothing else: no
validation beyond the JSON shape, no phone-number parsing, no breaker, no failover, no metrics,
no records, no logging, no request tracing. Whatever the gateway costs above this is overhead.
It gets the same event loop and the same GC tuning as the gateway's CLI, so neither side of a
comparison is flattered by a runtime setting the other lacks.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid

import aiohttp
from aiohttp import web

from gateway.emulators import EMULATOR_CREDENTIALS, EMULATOR_OPTIONS
from gateway.serving import _loop_factory, _tune_gc
from providers.aliyun import AliyunProvider
from providers.base import Delivery, Message, ProviderSettings, Secret

TEMPLATES = {"verify_code": "SMS_123456789"}
PROVIDER_KEY = web.AppKey("provider", AliyunProvider)


async def send(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    message = Message(uuid.uuid4().hex, tuple(body["to"]), body["template"], body["params"])
    result = await request.app[PROVIDER_KEY].send(message, 5.0)
    if result.delivery is not Delivery.ACCEPTED:
        return web.json_response({"status": "failed", "error": result.reason}, status=502)
    return web.json_response({"id": message.id, "status": "sent",
                              "provider_message_id": result.provider_message_id})


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def tune_gc(_app: web.Application) -> None:
    """The gateway's GC tuning, once started: what startup built is frozen, passes are rarer."""
    _tune_gc()


def create_app(endpoint: str) -> web.Application:
    app = web.Application()

    async def provider(app: web.Application):  # type: ignore[no-untyped-def]
        # Pooled like providers.http.make_session, without its tracing (a gateway feature).
        connector = aiohttp.TCPConnector(limit=200, limit_per_host=200, ttl_dns_cache=300)
        async with aiohttp.ClientSession(connector=connector,
                                         cookie_jar=aiohttp.DummyCookieJar()) as session:
            creds = {k: Secret(v) for k, v in EMULATOR_CREDENTIALS["aliyun"].items()}
            settings = ProviderSettings("aliyun", "aliyun", endpoint, creds, TEMPLATES,
                                        dict(EMULATOR_OPTIONS["aliyun"]))
            app[PROVIDER_KEY] = AliyunProvider(settings, session)
            yield

    app.cleanup_ctx.append(provider)
    app.on_startup.append(tune_gc)  # after cleanup_ctx (aiohttp runs it first): session built
    app.router.add_post("/sms", send)
    app.router.add_get("/healthz", healthz)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_proxy")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--aliyun", required=True, help="the Aliyun (emulator) base URL")
    args = parser.parse_args(argv)
    factory = _loop_factory()  # the same event loop as the gateway's CLI picks
    loop = factory() if factory is not None else None
    web.run_app(create_app(args.aliyun), host="127.0.0.1", port=args.port, access_log=None,
                print=None, loop=loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
