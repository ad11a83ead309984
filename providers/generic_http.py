"""``type: http``: any HTTP SMS API described in YAML, no code.

Method, URL, headers and a JSON or form body are small Jinja templates rendered in a sandbox;
success is an HTTP status plus an optional JSON field match; the provider's message id and error
code are read by dotted JSON paths; error codes map to the gateway's outcome classes.

Each template is rendered for its context, so no value can break out of it: JSON bodies are
built as data and serialised (a value is always one JSON string), form fields are URL-encoded,
values in the URL are percent-encoded, and a header value may not contain a line break.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

import aiohttp
import jinja2
from jinja2.sandbox import SandboxedEnvironment

from providers.base import Delivery, Health, Message, Provider, ProviderSettings, SendResult
from providers.http import WireResponse, exchange_with, retry_after

CLASSES: dict[str, tuple[Delivery, Health]] = {
    "caller": (Delivery.CALLER, Health.IGNORED),  # the caller's fault: 422, no failover
    "rcpt_limit": (Delivery.RCPT_LIMIT, Health.IGNORED),  # per-recipient limit: 429, no failover
    "throttled": (Delivery.SAFE, Health.THROTTLED),  # the API asked us to back off: fail over
    "disabled": (Delivery.SAFE, Health.DISABLED),  # account-level: auth, balance, quota
    "failure": (Delivery.SAFE, Health.FAILURE),  # certainly not sent: fail over
    "unknown": (Delivery.UNKNOWN, Health.FAILURE),  # may have been sent
}
FORMATS = ("json", "form")
METHODS = ("POST", "PUT", "GET")
DEFAULT_SUCCESS = (200, 201, 202)


def _b64encode(value: Any) -> str:
    """``{{ (env.SID ~ ':' ~ env.TOKEN) | b64encode }}``: HTTP Basic credentials."""
    return base64.b64encode(str(value).encode()).decode()


_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
_ENV.filters["b64encode"] = _b64encode


def json_path(document: Any, path: str) -> Any:
    """``a.b.0.c`` into parsed JSON; None when any step is missing."""
    node = document
    for step in path.split(".") if path else ():
        if isinstance(node, dict):
            node = node.get(step)
        elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        else:
            return None
    return node


def _templates(value: Any) -> list[str]:
    """Every template string inside a body/headers option."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [t for item in value.values() for t in _templates(item)]
    if isinstance(value, list):
        return [t for item in value for t in _templates(item)]
    return []


def check_options(options: Mapping[str, Any], endpoint: str | None) -> list[tuple[str, str]]:
    """Problems with a ``type: http`` provider's options, as (key, message) pairs."""
    problems: list[tuple[str, str]] = []
    if not endpoint:
        problems.append(("endpoint", "is required: the URL to send to (it may use {{ }})"))
    if str(options.get("format", "json")) not in FORMATS:
        problems.append(("format", f"must be one of: {', '.join(FORMATS)}"))
    if str(options.get("method", "POST")).upper() not in METHODS:
        problems.append(("method", f"must be one of: {', '.join(METHODS)}"))
    for key in ("headers", "body", "success", "errors"):
        if key in options and not isinstance(options[key], Mapping):
            problems.append((key, "must be a mapping"))
    body = options.get("body", {})
    if options.get("format") == "form" and isinstance(body, Mapping) \
            and any(isinstance(v, Mapping | list) for v in body.values()):
        problems.append(("body", "a form body is flat: one value per field"))
    errors = options.get("errors", {})
    for code, name in errors.items() if isinstance(errors, Mapping) else ():
        if name not in CLASSES:
            problems.append((f"errors.{code}",
                             f"unknown class {name!r}; use one of: {', '.join(CLASSES)}"))
    success = options.get("success", {})
    statuses = success.get("status", DEFAULT_SUCCESS) if isinstance(success, Mapping) else ()
    if not (isinstance(statuses, list | tuple) and statuses
            and all(isinstance(s, int) and 100 <= s < 600 for s in statuses)):
        problems.append(("success.status", "must be a list of HTTP status codes"))
    for key in ("headers", "body"):
        for text in _templates(options.get(key, {})):
            try:
                _ENV.parse(text)
            except jinja2.TemplateSyntaxError as exc:
                problems.append((key, f"template error in {text!r}: {exc.message}"))
    return problems


def _quoted(context: Mapping[str, Any]) -> dict[str, Any]:
    def q(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: q(v) for k, v in value.items()}
        if isinstance(value, list):
            return [q(v) for v in value]
        return quote(str(value), safe="")

    return {**{k: q(v) for k, v in context.items() if k != "env"}, "env": context["env"]}


class GenericHttpProvider(Provider):
    """Sends through any HTTP API described by its options (see README, "type: http")."""

    type_name = "http"
    optional_options = ("method", "format", "headers", "body", "success", "message_id",
                        "error_code", "errors")
    # Read from YAML as mappings, not strings; the config loader asks check_options about them.
    structured_options: ClassVar[tuple[str, ...]] = ("headers", "body", "success", "errors")
    check_options = staticmethod(check_options)
    needs_template_ids = False  # {{ template }} is the mapped id, or the logical name

    def __init__(self, settings: ProviderSettings, session: aiohttp.ClientSession) -> None:
        super().__init__(settings, session)
        options = settings.options
        problems = check_options(options, self.endpoint)
        if problems:  # the config loader reports these with lines; this guards direct use
            raise ValueError("; ".join(f"{key}: {message}" for key, message in problems))
        self.method = str(options.get("method", "POST")).upper()
        self.format = str(options.get("format", "json"))
        self.headers: Mapping[str, str] = options.get("headers", {})
        self.body: Mapping[str, Any] = options.get("body", {})
        success = options.get("success", {})
        self.success_status = tuple(success.get("status", DEFAULT_SUCCESS))
        self.success_field = str(success.get("field", ""))
        self.success_equals = success.get("equals")
        self.message_id_path = str(options.get("message_id", ""))
        self.error_code_path = str(options.get("error_code", ""))
        self.errors = {str(code): CLASSES[name] for code, name in
                       options.get("errors", {}).items()}
        # Read once when the config loads, as ${VAR} is; a send never touches os.environ.
        self.env = dict(os.environ)

    def context(self, message: Message) -> dict[str, Any]:
        """What templates see: to, recipients, params, template, message_id, env."""
        return {"to": ",".join(message.to), "recipients": list(message.to),
                "params": dict(message.params), "template": self.template_id(message.template),
                "message_id": message.id, "env": self.env}

    def _render(self, value: Any, context: Mapping[str, Any]) -> Any:
        if isinstance(value, str):
            return _ENV.from_string(value).render(context)
        if isinstance(value, Mapping):
            return {str(k): self._render(v, context) for k, v in value.items()}
        if isinstance(value, list):
            return [self._render(v, context) for v in value]
        return value  # numbers and booleans in a JSON body stay as written

    def request(self, message: Message) -> tuple[str, dict[str, str], bytes | None]:
        """URL, headers and body for one message; ValueError for a header with a line break."""
        context = self.context(message)
        # In the URL every value from the caller is percent-encoded: a number or a param cannot
        # add a path segment, a query parameter or a fragment. env values are the operator's.
        url = _ENV.from_string(self.endpoint or "").render(_quoted(context))
        headers = {str(k): str(self._render(v, context)) for k, v in self.headers.items()}
        if any("\r" in v or "\n" in v for v in headers.values()):
            raise ValueError("a header value rendered with a line break")
        fields = self._render(self.body, context)
        if self.method == "GET" or not fields:
            if fields:
                url += ("&" if "?" in url else "?") + urlencode(fields)
            return url, headers, None
        if self.format == "form":
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
            return url, headers, urlencode({k: str(v) for k, v in fields.items()}).encode()
        headers.setdefault("Content-Type", "application/json")
        return url, headers, json.dumps(fields, ensure_ascii=False).encode()

    async def send(self, message: Message, timeout: float) -> SendResult:
        try:
            url, headers, body = self.request(message)
        except (jinja2.TemplateError, ValueError) as exc:
            # Our config's fault and nothing left: another provider may send it, and this
            # provider's breaker is not charged with a failure of ours.
            return SendResult.not_sent(f"template: {type(exc).__name__}")
        return await exchange_with(self.session, self.method, url, timeout,
                                   read=self.classify, headers=headers, data=body)

    def classify(self, response: WireResponse) -> SendResult:
        """Success by status (+ field), else the mapped error class, else by HTTP status."""
        document = response.document
        if response.status in self.success_status and self._field_ok(document):
            found = json_path(document, self.message_id_path) if self.message_id_path else None
            return SendResult.accepted(None if found is None else str(found))
        code = json_path(document, self.error_code_path) if self.error_code_path else None
        reason = str(code) if code is not None else f"HTTP {response.status}"
        if code is not None and str(code) in self.errors:
            delivery, health = self.errors[str(code)]
        elif response.status == 429:
            delivery, health = CLASSES["throttled"]
        elif 400 <= response.status < 500 and response.status != 408:
            delivery, health = CLASSES["failure"]
        else:  # 5xx, or 2xx that is not the configured success: it may have been sent
            delivery, health = CLASSES["unknown"]
        wait = retry_after(response.headers) if health is Health.THROTTLED else None
        return SendResult(delivery, health, reason[:80], retry_after=wait)

    def _field_ok(self, document: Any) -> bool:
        if not self.success_field:
            return True
        value = json_path(document, self.success_field)
        if self.success_equals is None:
            return value is not None
        return value is not None and str(value) == str(self.success_equals)

    def describe(self) -> dict[str, Any]:
        # The endpoint template, not a rendered URL: rendering could put an env value on /status.
        return {"endpoint": self.endpoint, "method": self.method, "format": self.format}
