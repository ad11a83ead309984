"""One error shape: RFC 9457 problem+json, from one helper and one middleware."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """Raise from a handler to answer with a problem document."""

    def __init__(self, status: int, detail: str, *, slug: str | None = None,
                 retry_after: float | None = None, headers: Mapping[str, str] | None = None,
                 **extensions: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        self.extensions = extensions

    def response(self) -> web.Response:
        response = problem(self.status, self.detail, slug=self.slug,
                           retry_after=self.retry_after, **self.extensions)
        response.headers.update(self.headers)
        return response


def problem_body(status: int, detail: str, slug: str | None = None,
                 **extensions: Any) -> dict[str, Any]:
    """A problem document; ``slug`` names the problem type, e.g. ``invalid-request``."""
    body: dict[str, Any] = {
        "type": f"urn:sms-gateway:problem:{slug}" if slug else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    body.update({k: v for k, v in extensions.items() if v is not None})
    return body


def json_reply(status: int, body: dict[str, Any],
               retry_after: float | None = None) -> web.Response:
    """A JSON response; problem+json for error statuses, with Retry-After when given."""
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return web.Response(
        status=status, text=json.dumps(body, ensure_ascii=False), headers=headers,
        content_type=PROBLEM_JSON if status >= 400 else "application/json",
    )


def problem(status: int, detail: str, *, slug: str | None = None,
            retry_after: float | None = None, **extensions: Any) -> web.Response:
    """A problem+json response."""
    return json_reply(status, problem_body(status, detail, slug, **extensions), retry_after)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into problem+json; never leak a traceback or an internal path."""
    try:
        return await handler(request)
    except Problem as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        response = problem(exc.status, detail or exc.reason)
        response.headers.update(headers)
        return response
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return problem(500, "internal error; the gateway logged the details", slug="internal")
