"""``GET /openapi.json``: an OpenAPI 3.1 description of the public HTTP API (SPEC section 3).

The document is built per request from the running config, so ``template`` lists the templates
callers can use right now (a reload changes it); the request's schema is generated from the
pydantic model the body is validated with (gateway/models.py). It never names a provider's
credentials, endpoints or template ids: only what a caller needs.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import __version__
from gateway.config import MAX_BODY_BYTES, Config
from gateway.keys import gateway_key
from gateway.models import request_schema
from gateway.receipt_routes import OPENAPI_PATHS as RECEIPT_PATHS

_JSON = "application/json"
_PROBLEM = "application/problem+json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _problem(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description,
                                "content": {_PROBLEM: {"schema": _ref("Problem")}}}
    if retry_after:
        response["headers"] = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
    return response


_ATTEMPT = {
    "type": "object",
    "properties": {
        "provider": {"type": "string"},
        "outcome": {"enum": ["accepted", "failed", "rejected", "unknown", "skipped"]},
        "error": {"type": ["string", "null"]},
        "duration_ms": {"type": "number"},
    },
    "required": ["provider", "outcome", "error", "duration_ms"],
}

_SEND_RESULT = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "ours; sent as Aliyun OutId / Huawei extend"},
        "status": {"enum": ["sent", "unknown"]},
        "provider": {"type": ["string", "null"]},
        "provider_message_id": {"type": ["string", "null"]},
        "to": {"type": "array", "items": {"type": "string"}, "description": "E.164"},
        "attempts": {"type": "array", "items": _ref("Attempt")},
        "message": {"const": "send"},
        "refused": {
            "type": "array",
            "description": "present when the provider sent to the other recipients but refused "
            "these (Huawei per-number status); not failed over",
            "items": {"type": "object", "properties": {"to": {"type": "string"},
                                                       "error": {"type": "string"}},
                      "required": ["to", "error"]},
        },
    },
    "required": ["id", "status", "provider", "to", "attempts", "message"],
}

_SEND_QUEUED = {
    "type": "object",
    "description": "async (\"mode\": \"async\"): written as queued; the outbox sends it",
    "properties": {
        "id": {"type": "string", "description": "ours; GET /sms/{id} shows how it goes"},
        "status": {"const": "queued"},
        "mode": {"const": "async"},
        "to": {"type": "array", "items": {"type": "string"}, "description": "E.164"},
        "expires_at": {"type": "number", "description": "Unix seconds: expired if not sent"},
        "message": {"const": "queued"},
    },
    "required": ["id", "status", "mode", "to", "expires_at", "message"],
}

_PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {
            "type": "object", "properties": {"field": {"type": "string"},
                                             "message": {"type": "string"}}}},
        "id": {"type": "string"},
        "attempts": {"type": "array", "items": _ref("Attempt")},
    },
    "required": ["type", "title", "status", "detail"],
}


# -- the records API (SPEC §7): GET /sms and GET /sms/{id} ------------------------------------

_STATUSES = ["queued", "sending", "sent", "delivered", "undelivered", "failed", "rejected",
             "unknown", "expired", "rate_limited"]
_TIME = {"type": "number", "description": "Unix seconds"}
_MAYBE_TIME = {"type": ["number", "null"], "description": "Unix seconds"}
_MAYBE_TEXT = {"type": ["string", "null"]}

_RECORD_ATTEMPT = {
    "type": "object",
    "properties": {
        "provider": {"type": "string"},
        "outcome": {"type": "string", "description": "accepted, failed, rejected, unknown; "
                    "in_flight while (or if a crash left it) started and not finished"},
        "error": _MAYBE_TEXT,
        "duration_ms": {"type": ["number", "null"]},
        "started_at": _TIME,
        "finished_at": _MAYBE_TIME,
    },
    "required": ["provider", "outcome", "error", "duration_ms", "started_at", "finished_at"],
}

_RECORD = {
    "type": "object",
    "description": "one send as the store keeps it; numbers masked unless the key has "
    "read_numbers",
    "properties": {
        "id": {"type": "string"},
        "status": {"enum": _STATUSES},
        "template": {"type": "string"},
        "to": {"type": "array", "items": {"type": "string"}},
        "mode": {"enum": ["sync", "async"]},
        "created_at": _TIME,
        "updated_at": _TIME,
        "final_at": _MAYBE_TIME,
        "http_status": {"type": "integer", "description": "the answer the final status stands "
                        "for (0 while not final)"},
        "provider": _MAYBE_TEXT,
        "provider_message_id": _MAYBE_TEXT,
        "error": _MAYBE_TEXT,
        "attempts": {"type": "array", "items": _ref("RecordAttempt")},
        "refused": {"type": "array", "items": {
            "type": "object", "properties": {"index": {"type": "integer"},
                                             "to": {"type": "string"},
                                             "error": _MAYBE_TEXT},
            "required": ["index", "to", "error"]}},
        "params": {"type": "object", "description": "only while kept (storage.keep_params, or "
                   "until sending is over)"},
    },
    "required": ["id", "status", "template", "to", "mode", "created_at", "updated_at",
                 "final_at", "http_status", "provider", "provider_message_id", "error",
                 "attempts", "refused"],
}

_RECORD_PAGE = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": _ref("Record")},
                   "next_cursor": {"type": ["string", "null"],
                                   "description": "pass back as cursor for the next page"}},
    "required": ["items", "next_cursor"],
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _list_operation() -> dict[str, Any]:
    when = {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]}
    return {"get": {
        "operationId": "listSms",
        "summary": "retained send records, newest first, numbers masked",
        "security": [{}, {"bearer": []}, {"apiKey": []}],
        "parameters": [
            _query("status", {"enum": _STATUSES}, "only records with this status"),
            _query("template", {"type": "string"}, "only sends of this template"),
            _query("to", {"type": "string"}, "only sends to this number (E.164, or national "
                   "in the default region)"),
            _query("since", when, "created at or after: RFC 3339 with an offset, or Unix "
                   "seconds"),
            _query("until", when, "created before: RFC 3339 with an offset, or Unix seconds"),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                   "records per page"),
            _query("cursor", {"type": "string"}, "opaque: the next_cursor of the previous "
                   "page (keyset: pages never repeat or skip a record while new ones arrive)"),
        ],
        "responses": {
            "200": {"description": "a page: the caller's own records unless its key has "
                    "read_all", "content": {_JSON: {"schema": _ref("RecordPage")}}},
            "400": _problem("an unknown filter, or a wrong value; the problem's field names it"),
            "401": _problem("auth is on and the key is missing or wrong"),
            "403": _problem("the key does not have the read right"),
            "503": _problem("the message store is unavailable", retry_after=True),
        },
    }}


def _send_operation(alias: bool) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": "sendSmsSeed" if alias else "sendSms",
        "summary": "the seed's path for POST /sms" if alias else "send one templated SMS",
        "security": [{}, {"bearer": []}, {"apiKey": []}],
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                        "description": "a repeat with the same key and body replays the answer"}],
        "requestBody": {"required": True, "content": {_JSON: {"schema": _ref("SendRequest")}},
                        "description": f"at most {MAX_BODY_BYTES} bytes"},
        "responses": {
            "200": {"description": "a provider accepted it",
                    "content": {_JSON: {"schema": _ref("SendResult")}}},
            "202": {"description": "async: queued (once durably written); sync: outcome "
                    "unknown (maybe sent) and on_unknown is stop",
                    "content": {_JSON: {"schema": {"oneOf": [_ref("SendQueued"),
                                                             _ref("SendResult")]}}}},
            "400": _problem("the body is not JSON, not an object, or has wrong types"),
            "401": _problem("auth is on and the key is missing or wrong"),
            "403": _problem("the key does not have the send right"),
            "409": _problem("Idempotency-Key used with another body, or still in flight"),
            "413": _problem(f"body over {MAX_BODY_BYTES} bytes or too many numbers"),
            "415": _problem("the content type is not JSON"),
            "422": _problem("unknown template, wrong params, invalid numbers, a destination "
                            "outside countries.allow, or a provider rejected it as the "
                            "caller's fault"),
            "429": _problem("a limit of the gateway's (limits:) or a provider's per-recipient "
                            "limit", retry_after=True),
            "502": _problem("every provider tried failed; none sent it"),
            "503": _problem("every provider is open or disabled", retry_after=True),
        },
    }
    return operation


def _get(operation_id: str, summary: str, responses: dict[str, Any],
         **extra: Any) -> dict[str, Any]:
    return {"get": {"operationId": operation_id, "summary": summary, "responses": responses,
                    **extra}}


def _json_ok(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": {"type": "object"}}}}


def document(config: Config) -> dict[str, Any]:
    """The OpenAPI 3.1 document for a running config (its templates and limits)."""
    message_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    admin = {"post": {
        "operationId": "adminBreaker", "summary": "force a provider's breaker",
        "security": [{}, {"bearer": []}, {"apiKey": []}],
        "parameters": [
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "action", "in": "path", "required": True,
             "schema": {"enum": ["open", "close", "reset"]}}],
        "responses": {"200": _json_ok("the provider's status row"),
                      "401": _problem("auth is on and the key is missing or wrong"),
                      "403": _problem("the key does not have the admin right, or a foreign "
                                      "Origin: cross-site requests change nothing"),
                      "404": _problem("no such provider or action"),
                      "415": _problem("not sent as application/json (an empty body is fine)")},
    }}
    return {
        "openapi": "3.1.0",
        "info": {"title": "sms-gateway", "version": __version__,
                 "description": "One HTTP call to send an SMS through prioritized providers."},
        "paths": {
            "/sms": {"post": _send_operation(alias=False), **_list_operation()},
            "/api/sms": {"post": _send_operation(alias=True)},
            "/sms/{id}": _get("getSms", "a retained send record, numbers masked", {
                "200": {"description": "the record (text/html for a browser: the record page)",
                        "content": {_JSON: {"schema": _ref("Record")},
                                    "text/html": {"schema": {"type": "string"}}}},
                "401": _problem("bad key"),
                "403": _problem("the key does not have the read right"),
                "404": _problem("not retained"),
                "503": _problem("the message store is unavailable", retry_after=True)},
                parameters=[message_id], security=[{}, {"bearer": []}, {"apiKey": []}]),
            "/status": _get("status", "config and per-provider state",
                            {"200": _json_ok("the status document")}),
            "/healthz": _get("healthz", "200 while the process serves",
                             {"200": _json_ok("serving")}),
            "/readyz": _get("readyz", "whether any provider can take traffic", {
                "200": _json_ok("ready"), "503": _problem("no provider can take traffic")}),
            "/metrics": _get("metrics", "Prometheus text", {"200": {
                "description": "metrics", "content": {"text/plain": {
                    "schema": {"type": "string"}}}}}),
            "/openapi.json": _get("openapi", "this document", {"200": _json_ok("OpenAPI 3.1")}),
            "/admin/providers/{name}/{action}": admin,
            "/admin/limits/clear": _clear_limits(),
            **RECEIPT_PATHS,
        },
        "components": {
            "schemas": {"SendRequest": request_schema(config.templates,
                                                      config.server.max_recipients),
                        "SendResult": _SEND_RESULT, "SendQueued": _SEND_QUEUED,
                        "Attempt": _ATTEMPT, "Problem": _PROBLEM_SCHEMA,
                        "Record": _RECORD, "RecordAttempt": _RECORD_ATTEMPT,
                        "RecordPage": _RECORD_PAGE},
            "headers": {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


def _clear_limits() -> dict[str, Any]:
    body = {"type": "object", "additionalProperties": False, "required": ["number"],
            "properties": {"number": {"type": "string", "description": (
                "E.164 (+86...), or without + in defaults.region")}}}
    return {"post": {
        "operationId": "adminClearLimits", "summary": "forget one number's limit counts",
        "security": [{}, {"bearer": []}, {"apiKey": []}],
        "requestBody": {"required": True, "content": {_JSON: {"schema": body}}},
        "responses": {"200": _json_ok("{number (masked), cleared: hits deleted}"),
                      "400": _problem("the body is not {\"number\": \"...\"}"),
                      "401": _problem("auth is on and the key is missing or wrong"),
                      "403": _problem("the key does not have the admin right, or a foreign "
                                      "Origin: cross-site requests change nothing"),
                      "415": _problem("not sent as application/json"),
                      "422": _problem("not a valid phone number"),
                      "503": _problem("the store is unavailable")}}}


async def openapi_json(request: web.Request) -> web.Response:
    """GET /openapi.json for the running config."""
    return web.json_response(document(request.app[gateway_key].runtime.config))
