"""The value-level sections of config.yaml (server, logging, defaults, breaker, templates) as
pydantic models: the checker validates them with these, and the JSON Schema is made from them.

Each value type converts what the gateway reads (after ``${VAR}`` substitution) with today's
rules and words ("must be an integer, not 'lots'"), and publishes what may be written (which
includes a ``${VAR}``). ``Checker.section`` walks a YAML node with a model: unknown keys, line
numbers and the file come from the node, the rest from pydantic's error locations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import phonenumbers
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from gateway.yamlsrc import Node, Seq, parse_duration, shown

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ENV = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}",
       "description": "${VAR} or ${VAR:-default}: read from the environment at load"}
STRING: list[dict[str, Any]] = [{"type": "string"}, {"type": "number"}]  # 1110 is "1110"
TEXT = {"anyOf": STRING}
RAW = object()  # a field the builder reads itself (its ${VAR}s have rules of their own)


def problem(message: str) -> ValueError:
    """A config problem in the checker's own words (Checker.section reports it as written)."""
    return ValueError(message)


def kind(value: Any) -> str:
    if isinstance(value, Node | dict):
        return "a mapping"
    if isinstance(value, Seq | list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    return type(value).__name__


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise problem(f"must be a string, not {kind(value)}")
    return str(value)


def _texts(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise problem("must be a list of strings")
    for item in items:
        if not isinstance(item, str | int) or isinstance(item, bool):
            raise problem(f"items must be strings: {kind(item)}")
    return [str(item) for item in items]


def written(*alternatives: dict[str, Any], **extra: Any) -> WithJsonSchema:
    """What may be written: the alternatives, a ${VAR}, or nothing (the default)."""
    return WithJsonSchema({"anyOf": [*alternatives, ENV, {"type": "null"}], **extra})


def _count(minimum: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = int(value)
            if isinstance(value, float) and value != number:
                raise ValueError
        except (TypeError, ValueError):
            raise problem(f"must be an integer, not {shown(value)}") from None
        if number < minimum:
            raise problem(f"must be at least {minimum}")
        return number
    return convert


def _count_written(minimum: int) -> WithJsonSchema:
    return written({"type": "integer", "minimum": minimum},
                    {"type": "string", "pattern": r"^\s*\d+\s*$"})


def _number(value: Any) -> float:
    """A number written as one (or as text), never a boolean."""
    try:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    except (TypeError, ValueError):
        raise problem(f"must be a number, not {shown(value)}") from None


def _rate(value: Any) -> float:
    number = _number(value)
    if not 0 < number <= 1:
        raise problem("must be above 0 and at most 1")
    return number


def _weight(value: Any) -> float:
    number = _number(value)
    if number < 0.0:
        raise problem("must be at least 0.0")
    return number


_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def _flag(value: Any) -> bool:
    if isinstance(value, str) and value.lower() in (*_TRUE, *_FALSE):
        return value.lower() in _TRUE
    if not isinstance(value, bool):
        raise problem("must be true or false")
    return value


def _duration(positive: bool) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise problem(str(exc)) from None
        if positive and seconds <= 0:
            raise problem("must be above zero")
        return seconds
    return convert


DURATION = written({"type": "number", "minimum": 0},
                    {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"},
                    description="250ms, 5s, 2m, 1h, 30d or a number of seconds")


def case_free(*words: str) -> str:
    """A regex matching any of ``words`` in any letter case (JSON Schema has no (?i))."""
    spelled = ("".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in w)
               for w in words)
    return f"^({'|'.join(spelled)})$"


def _level(value: Any) -> str:
    level = _text(value).upper()
    if level not in LEVELS:
        raise problem("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _region(value: Any) -> str:
    region = _text(value).upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise problem(f"unknown region {shown(region)}; use an ISO 3166 code such as CN or US")
    return region


def _params(value: Any) -> tuple[str, ...]:
    params = _texts(value)
    if len(set(params)) != len(params):
        raise problem("params must be unique")
    return tuple(params)


def _on_unknown(value: Any) -> str:
    if _text(value) not in ("stop", "failover"):
        raise problem("must be 'stop' or 'failover'")
    return str(value)


def _trusted(value: Any) -> tuple[str, ...]:
    """E.164 numbers or prefixes, country code included (``+`` optional: YAML reads an unquoted
    +86138 as the integer 86138)."""
    out = []
    for item in _texts(value):
        digits = item.strip().lstrip("+")
        if not (digits.isdigit() and digits.isascii() and 3 <= len(digits) <= 15):
            raise problem(f"items must be E.164 numbers or prefixes such as +86138, "
                          f"not {shown(item)}")
        out.append("+" + digits)
    return tuple(dict.fromkeys(out))


Text = Annotated[str, BeforeValidator(_text), written(*STRING)]
TEXTS = written({"type": "array", "items": TEXT}, *STRING)
Count0 = Annotated[int, BeforeValidator(_count(0)), _count_written(0)]
Count1 = Annotated[int, BeforeValidator(_count(1)), _count_written(1)]
Count1024 = Annotated[int, BeforeValidator(_count(1024)), _count_written(1024)]
Duration = Annotated[float, BeforeValidator(_duration(False)), DURATION]
Positive = Annotated[float, BeforeValidator(_duration(True)), DURATION]
Rate = Annotated[float, BeforeValidator(_rate),
                 written({"type": "number", "exclusiveMinimum": 0, "maximum": 1})]
Level = Annotated[str, BeforeValidator(_level),
                  written({"type": "string", "pattern": case_free(*LEVELS)})]
Region = Annotated[str, BeforeValidator(_region), written(
    {"type": "string", "pattern": "^[A-Za-z]{2}$"},
    description="ISO 3166 code for numbers without + (CN)")]
Weight = Annotated[float, BeforeValidator(_weight), written({"type": "number", "minimum": 0})]
Flag = Annotated[bool, BeforeValidator(_flag), written(
    {"type": "boolean"}, {"type": "string", "pattern": case_free(*_TRUE, *_FALSE)})]
Names = Annotated[tuple[str, ...], BeforeValidator(lambda v: tuple(_texts(v))), TEXTS]
Params = Annotated[tuple[str, ...], BeforeValidator(_params), TEXTS]
Trusted = Annotated[tuple[str, ...], BeforeValidator(_trusted), TEXTS]


OnUnknown = Annotated[Literal["stop", "failover"], BeforeValidator(_on_unknown),
                      written({"enum": ["stop", "failover"]})]


MAX_TTL = 72 * 3600.0  # an async message may wait at most this long (SPEC §8)


def _send_mode(value: Any) -> str:
    if _text(value) not in ("sync", "async"):
        raise problem("must be 'sync' or 'async'")
    return str(value)


def _ttl(value: Any) -> float:
    seconds = _duration(True)(value)
    if seconds > MAX_TTL:
        raise problem("must be at most 72h")
    return seconds


SendMode = Annotated[Literal["sync", "async"], BeforeValidator(_send_mode),
                     written({"enum": ["sync", "async"]})]
TTL = Annotated[float, BeforeValidator(_ttl), DURATION]


class Section(BaseModel):
    # Checker.section reports unknown keys itself (with the line), before pydantic sees them.
    model_config = ConfigDict(extra="forbid", frozen=True)


RIGHTS = ("send", "read", "read_all", "read_numbers", "admin")  # gateway.rights reads them
_NAMED_KEY = {"type": "object", "additionalProperties": False, "required": ["key"],
              "properties": {"name": TEXT, "key": TEXT,
                             "rights": {"type": "array", "items": {"enum": list(RIGHTS)}}}}
API_KEYS = written({"type": "array", "items": {"anyOf": [*STRING, _NAMED_KEY]}}, *STRING)


class Server(Section):
    api_keys: Annotated[Any, RAW, API_KEYS] = Field(  # an unset ${VAR} must not turn auth off
        None, description=("empty: no auth; a string key may send and read its own messages, "
                           "{name, key, rights: [send, read, read_all, read_numbers, admin]} "
                           "says what a named one may"))
    max_recipients: Count1 = Field(100, description="numbers per request")
    shutdown_timeout: Duration = Field(10.0, description="SIGTERM waits this long")
    pool_size: Count1 = Field(200, description="connections per provider host")
    pool_wait: Positive = Field(1.0, description="longest a send queues for one")
    header_timeout: Positive = Field(10.0, description="a request's headers")
    body_timeout: Positive = Field(30.0, description="a request's body")
    max_connections: Count1 = Field(1000, description="open client connections")
    callback_hosts: Names = Field((), description=(
        "hosts a callback_url may name: exact names or addresses, or *.example.com; "
        "private and loopback addresses only when listed exactly"))
    callback_secret: Annotated[Any, RAW, written(*STRING)] = Field(
        None, description="the HMAC-SHA256 key callbacks are signed with: a ${VAR}")
    callback_timeout: Positive = Field(10.0, description="one callback POST, all of it")
    trusted_numbers: Trusted = Field((), description=(
        "E.164 numbers or prefixes (+86138) that number and prefix limits do not count"))


class Logging(Section):
    level: Level = "INFO"
    file: Text = Field(
        "logs/gateway.log", description="relative to the config's folder; null: console only")
    max_bytes: Count1024 = 5_000_000
    backups: Count0 = 5


class Storage(Section):
    url: Text = Field("sqlite:///data/sms-gateway.db", description=(
        "sqlite:///relative/to/the/config.db, sqlite:////absolute.db, "
        "postgresql://user:pass@host/db, or memory (tests only)"))
    retention: Positive = Field(30 * 86400.0, description="records older than this are deleted")
    idempotency_ttl: Positive = Field(24 * 3600.0, description="how long a key is remembered")
    keep_params: Flag = Field(False, description="keep params once sending is over")
    workers: Count0 = Field(32, description=(
        "concurrent outbox (async) sends per process; 0: this process only queues them"))
    lease: Positive = Field(30.0, description="an outbox claim's lease, renewed while sending")


class Breaker(Section):
    """Every key optional: what is not written is inherited (defaults.breaker, then built-in)."""

    consecutive_failures: Count1 | None = None
    failure_rate: Rate | None = None
    minimum_calls: Count1 | None = None
    window: Positive | None = None
    open_for: Positive | None = None
    max_open_for: Positive | None = Field(None, description="at least open_for")
    half_open_probes: Count1 | None = None


class Defaults(Section):
    region: Region = "CN"
    timeout: Positive = Field(5.0, description="per provider attempt")
    deadline: Positive = Field(15.0, description="whole request, across failovers")
    breaker: Breaker | None = None


class Template(Section):
    params: Params = Field((), description="ordered, unique")
    on_unknown: OnUnknown = "stop"
    mode: SendMode = Field("sync", description="async: answered 202 queued, sent by the outbox")
    ttl: TTL | None = Field(None, description="async: expired if not sent by then (1h; max 72h)")


class Match(Section):
    template: Names = Field((), description="glob patterns (marketing_*); none: every template")
    country: Names = Field((), description="ISO 3166 codes; none: every country")


class Route(Section):
    match: Match | None = None
    providers: Names = Field((), description="provider names, tried in this order")


class ProviderEntry(Section):
    """What every provider entry may say; a type adds its options (config.entry_model).
    The RAW keys are read by the builder: they depend on the type and on --emulate."""

    name: Annotated[Any, RAW, written(*STRING)] = None
    type: Annotated[Any, RAW, written(*STRING)] = None
    priority: Count0 = Field(1, description="1 is tried first; equal priorities share by weight")
    weight: Weight = 1.0
    enabled: Flag = True
    timeout: Positive | None = Field(None, description="per attempt; unset: defaults.timeout")
    endpoint: Annotated[Any, RAW, written(*STRING)] = None
    breaker: Breaker | None = None
    credentials: Annotated[Any, RAW, written({"type": "object"})] = None
    templates: Annotated[Any, RAW, written({"type": "object"})] = Field(
        None, description="logical template name -> the provider's template id or text")


class Receipts(Section):
    """Delivery receipts (SPEC §9): where providers post them, and how they prove it."""

    token: Annotated[Any, RAW, written(*STRING)] = Field(  # a secret: read by the builder
        None, description=("the secret path part of /receipts/{aliyun,huawei}/{token}: "
                           "${SMS_GATEWAY_RECEIPT_TOKEN}; unset: receipts are off"))
    public_url: Text | None = Field(None, description=(
        "this gateway's URL as the providers reach it (https://sms.example.com); Huawei sends "
        "then carry statusCallback"))
