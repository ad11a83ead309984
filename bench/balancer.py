"""A small round-robin HTTP load balancer (aiohttp), for ``make cluster`` and the bench.

Each request goes to the next replica in turn. A replica that refuses the connection is skipped
for DOWN_FOR seconds and the request goes to the next one (safe even for POST: a refused
connection received nothing). Any other failure mid-request is a 502: the replica may have
acted on it, and only the caller (with its Idempotency-Key) may retry. Not for production: use
haproxy or nginx there (deploy/docker-compose.yml).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import AsyncIterator, Sequence

import aiohttp
from aiohttp import web

log = logging.getLogger("balancer")

DOWN_FOR = 2.0
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailers", "transfer-encoding", "upgrade", "host", "content-length"}
session_key = web.AppKey("session", aiohttp.ClientSession)


class RoundRobin:
    """The replicas, in turn, skipping the ones that refused a connection lately."""

    def __init__(self, upstreams: Sequence[str]) -> None:
        self.upstreams = [u.rstrip("/") for u in upstreams]
        self._turn = itertools.cycle(range(len(self.upstreams)))
        self._down_until = [0.0] * len(self.upstreams)

    def order(self) -> list[str]:
        """Every replica, starting with the next in turn; the ones marked down last."""
        first = next(self._turn)
        now = time.monotonic()
        turn = [self.upstreams[(first + i) % len(self.upstreams)]
                for i in range(len(self.upstreams))]
        return sorted(turn, key=lambda u: self._down_until[self.upstreams.index(u)] > now)

    def refused(self, upstream: str) -> None:
        index = self.upstreams.index(upstream)
        if self._down_until[index] < time.monotonic():
            log.warning("%s refused the connection: skipped for %.0fs", upstream, DOWN_FOR)
        self._down_until[index] = time.monotonic() + DOWN_FOR


def balancer_app(upstreams: Sequence[str]) -> web.Application:
    """The proxy app: every path, every method, to the replicas in turn."""
    pool = RoundRobin(upstreams)
    app = web.Application(client_max_size=2 * 1024 * 1024)

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            app[session_key] = session
            yield

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        headers["X-Forwarded-For"] = request.remote or ""
        for upstream in pool.order():
            try:
                async with app[session_key].request(
                        request.method, upstream + request.path_qs, data=body, headers=headers,
                        allow_redirects=False) as answer:
                    payload = await answer.read()
                    out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
                    out["X-Replica"] = upstream
                    return web.Response(status=answer.status, body=payload, headers=out)
            except aiohttp.ClientConnectorError:
                pool.refused(upstream)  # nothing was received: the next one may take it
            except (TimeoutError, aiohttp.ClientError) as exc:
                return web.json_response({"title": "Bad Gateway", "status": 502,
                                          "detail": f"{upstream}: {exc}"}, status=502)
        return web.json_response({"title": "Service Unavailable", "status": 503,
                                  "detail": "no replica accepts connections"}, status=503)

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app
