"""``POST /sms`` bodies: read within limits, parsed, and checked against the running config.

Order matters for the status a caller sees: 415 (content type), 413 (size), 400 (shape),
413 (too many numbers), then 422 with every template, param and number problem listed at once.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import ContentLengthError, PayloadEncodingError
from pydantic import ValidationError

from gateway.callback_rules import allowed_hosts, url_problem
from gateway.config import MAX_BODY_BYTES, Config, TemplateConfig
from gateway.models import FIELDS, ParamValue, SendBody
from gateway.models_sections import MAX_TTL
from gateway.phones import Number, normalize
from gateway.problems import Problem
from gateway.yamlsrc import parse_duration

DEFAULT_TTL = 3600.0  # an async message's ttl when neither request nor template gives one


@dataclass(frozen=True, slots=True)
class SendRequest:
    """A valid send: normalized, de-duplicated numbers and params in the template's order."""

    numbers: tuple[Number, ...]
    template: TemplateConfig
    params: dict[str, str]
    callback_url: str | None = None  # checked against server.callback_hosts
    mode: str = "sync"  # async: queued in the outbox (SPEC §8)
    ttl: float = DEFAULT_TTL  # async: how long it may wait

    @property
    def countries(self) -> frozenset[str]:
        return frozenset(n.region for n in self.numbers)

    def fingerprint(self) -> str:
        """Same numbers, template and params: same fingerprint (for Idempotency-Key)."""
        canonical = json.dumps([sorted(n.e164 for n in self.numbers), self.template.name,
                                self.params], sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json"))


async def read_json(request: web.Request) -> Any:
    """The JSON body, or a Problem (415, 413, 400) without reading more than the limit."""
    if not _is_json(request.content_type):
        raise Problem(415, "send the body as application/json", slug="unsupported-media-type")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise Problem(413, f"the body is over {MAX_BODY_BYTES} bytes", slug="body-too-large")
    try:
        raw = await request.read()  # the app's client_max_size stops a chunked body at the limit
    except web.HTTPRequestEntityTooLarge:
        raise Problem(413, f"the body is over {MAX_BODY_BYTES} bytes",
                      slug="body-too-large") from None
    except (ConnectionError, PayloadEncodingError, ContentLengthError) as exc:
        raise Aborted(type(exc).__name__) from None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Problem(400, "the body is not valid JSON", slug="invalid-json") from None


class Aborted(Exception):
    """The client hung up before its body arrived: nobody is left to answer."""


def shown(text: str) -> str:
    """``text`` safe to echo in an answer: a lone surrogate (JSON allows ``"\\ud800"``) would
    make the response itself unencodable, so it is shown escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bad(detail: str, errors: list[dict[str, str]] | None = None) -> Problem:
    return Problem(400, detail, slug="invalid-request", errors=errors)


_SHAPE = {  # what a wrong field is told, by field: the same words whatever pydantic found
    "to": ("'to' must be a list of phone numbers or one comma-separated string",
           "must be a list of strings"),
    "template": ("'template' must be a non-empty string", "must be a non-empty string"),
    "callback_url": ("'callback_url' must be a string: an http:// or https:// URL",
                     "must be a string"),
}


def _shape_problem(body: dict[str, Any], errors: Sequence[Mapping[str, Any]]) -> Problem:
    """The first of the body's shape errors, in the order a person reads the fields."""
    unknown = [str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        return _bad(f"unknown field(s): {', '.join(unknown)}",
                    [{"field": k, "message": "unknown field"} for k in unknown])
    _numbers_given(body)
    first = min(errors, key=lambda e: FIELDS.index(str(e["loc"][0])))
    field, loc = str(first["loc"][0]), first["loc"]
    if field in ("to", "receivers") and first["type"] == "value_error":
        return _bad("'to' has no numbers", [{"field": "to", "message": "is empty"}])
    if field == "params" and len(loc) == 1:
        return _bad("'params' must be an object",
                    [{"field": "params", "message": "not an object"}])
    if field == "params":
        key = str(loc[1])
        return _bad(f"param {key!r} must be a string or a number",
                    [{"field": f"params.{key}", "message": "must be a string or a number"}])
    detail, message = _SHAPE[field if field in ("template", "callback_url") else "to"]
    return _bad(detail, [{"field": "to" if field == "receivers" else field,
                          "message": message}])


def _numbers_given(body: dict[str, Any]) -> None:
    if "to" in body and "receivers" in body:
        raise _bad("give the numbers as 'to' or as 'receivers', not both")
    if body.get("to", body.get("receivers")) is None:
        raise _bad("'to' is required", [{"field": "to", "message": "is required"}])


def _shape(body: Any) -> SendBody:
    """The body as a SendBody, or the 400 a person would fix first."""
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    # pydantic-core reads keys as UTF-8: a lone surrogate in one would come back mangled
    safe = {shown(key): value for key, value in body.items()}
    if isinstance(safe.get("params"), dict):
        safe["params"] = {shown(key): value for key, value in safe["params"].items()}
    try:
        parsed = SendBody.model_validate(safe)
    except ValidationError as exc:
        raise _shape_problem(body, exc.errors()) from None
    _numbers_given(body)
    return parsed


def _params(raw: dict[str, ParamValue] | None) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The params as text, and the values no provider could be sent (422 problems)."""
    out, errors = {}, []
    for key, value in (raw or {}).items():
        name = f"params.{shown(key)}"
        if isinstance(value, float) and not math.isfinite(value):  # json.loads takes NaN, 1e999
            errors.append({"field": name, "message": "must be a finite number"})
        elif isinstance(value, str) and not _encodable(value):
            errors.append({"field": name,
                           "message": "cannot be encoded as UTF-8 (a lone surrogate)"})
        out[key] = value if isinstance(value, str) else json.dumps(value)
    return out, errors


def parse_send(body: Any, config: Config) -> SendRequest:
    """Check a decoded body against the config; raise Problem with every error found."""
    send = _shape(body)
    raw_numbers, template_name = send.numbers, send.template
    params, errors = _params(send.params)
    errors += _async_errors(send)
    limit = config.server.max_recipients
    if len(raw_numbers) > limit:
        raise Problem(413, f"{len(raw_numbers)} numbers; at most {limit} per request",
                      slug="too-many-recipients")
    template = config.templates.get(template_name)
    if template is None:
        known = ", ".join(sorted(config.templates)) or "none"
        errors.append({"field": "template", "message": f"unknown template; known: {known}"})
    else:
        errors += [{"field": f"params.{p}", "message": "missing"}
                   for p in template.params if p not in params]
        errors += [{"field": f"params.{shown(p)}", "message": "not a param of this template"}
                   for p in params if p not in template.params]
    numbers: dict[str, Number] = {}
    for index, raw in enumerate(raw_numbers):
        try:
            number = normalize(raw, config.region)
        except ValueError as exc:
            errors.append({"field": f"to[{index}]", "message": str(exc)})
            continue
        numbers.setdefault(number.e164, number)  # the same person never gets it twice
    if send.callback_url is not None:
        refused = url_problem(send.callback_url, allowed_hosts(config.server.callback_hosts))
        if refused:
            errors.append({"field": "callback_url", "message": refused})
    if errors or template is None:
        raise Problem(422, "the message cannot be sent as given; see 'errors'",
                      slug="unprocessable", errors=errors)
    ordered = {p: params[p] for p in template.params}
    ttl = _ttl(send.ttl) if send.ttl is not None else template.ttl or DEFAULT_TTL
    return SendRequest(tuple(numbers.values()), template, ordered, send.callback_url,
                       send.mode or template.mode, ttl)


def _async_errors(send: SendBody) -> list[dict[str, str]]:
    """What is wrong with ``mode`` and ``ttl`` (SPEC §8), as 422 errors naming the field."""
    errors = []
    if send.mode is not None and send.mode not in ("sync", "async"):
        errors.append({"field": "mode", "message": "must be 'sync' or 'async'"})
    if send.ttl is not None:
        try:
            _ttl(send.ttl)
        except ValueError as exc:
            errors.append({"field": "ttl", "message": str(exc)})
    return errors


def _ttl(value: Any) -> float:
    """A ttl in seconds: "10m", "2h", or a number of seconds, above 0 and at most 72h."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be a duration such as 10m or 2h, or a number of seconds")
    seconds = parse_duration(value)  # its ValueError says what is wrong
    if math.isnan(seconds) or seconds > MAX_TTL:
        raise ValueError("must be at most 72h")
    if seconds <= 0:
        raise ValueError("must be above zero")
    return seconds
