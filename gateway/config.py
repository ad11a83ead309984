"""``config.yaml``: typed settings, validated at load with file, line and key in every error."""

from __future__ import annotations

import fnmatch
import functools
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import create_model

from gateway.callback_rules import read_callback_secret
from gateway.endpoints import endpoint_problem
from gateway.limits import LimitsConfig, read_limits
from gateway.models_sections import (
    LEVELS,
    RAW,
    Breaker,
    Defaults,
    Logging,
    ProviderEntry,
    Receipts,
    Route,
    Server,
    Storage,
    Template,
)
from gateway.rights import ApiKey, read_api_keys
from gateway.schema import Checker, ConfigError, ConfigProblem
from gateway.yamlsrc import (
    Node,
    Seq,
    YamlSyntaxError,
    merge,
    parse,
    read,
    shown,
    substitute,
    tag,
)
from providers import resolve_provider_class
from providers.base import Provider, ProviderSettings, Secret

__all__ = [
    "LEVELS", "BreakerSettings", "Config", "ConfigError", "ConfigProblem", "Emulation",
    "LoggingConfig", "ProviderConfig", "ReceiptsConfig", "RouteConfig", "ServerConfig",
    "StorageConfig",
    "TemplateConfig",
    "load_config", "parse_config",
]

MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """SPEC section 5; durations in seconds."""

    consecutive_failures: int = 5
    failure_rate: float = 0.5
    minimum_calls: int = 10
    window: float = 30.0
    open_for: float = 30.0
    max_open_for: float = 300.0
    half_open_probes: int = 1


@dataclass(frozen=True, slots=True)
class ServerConfig:
    api_keys: tuple[ApiKey, ...] = ()
    max_recipients: int = 100
    shutdown_timeout: float = 10.0
    pool_size: int = 200  # outgoing connections per provider host (read at start)
    pool_wait: float = 1.0  # longest a send queues for one; nothing was sent if it gives up
    header_timeout: float = 10.0  # a request's headers, from connect or the previous response
    body_timeout: float = 30.0  # a request's whole body, once its headers are in
    max_connections: int = 1000  # open client connections; more get a 503 and are closed
    callback_hosts: tuple[str, ...] = ()  # where callback_url may point (gateway.callback_rules)
    callback_secret: Secret = field(default_factory=lambda: Secret(""))  # signs callbacks
    callback_timeout: float = 10.0  # one callback POST
    trusted_numbers: tuple[str, ...] = ()  # "+digits" prefixes that limits per number skip


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "INFO"
    file: str | None = "logs/gateway.log"
    max_bytes: int = 5_000_000
    backups: int = 5


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """The message store (read at start); ``url`` as written, ``base`` the config's folder."""

    url: str = "sqlite:///data/sms-gateway.db"
    base: Path | None = None  # a relative sqlite:/// path is read against it
    retention: float = 30 * 86400.0
    idempotency_ttl: float = 24 * 3600.0
    keep_params: bool = False
    workers: int = 32  # concurrent outbox sends per process
    lease: float = 30.0  # an outbox claim's lease (renewed while the send runs)


@dataclass(frozen=True, slots=True)
class ReceiptsConfig:
    """Delivery receipts (SPEC §9): off while ``token`` is None."""

    token: Secret | None = None
    public_url: str | None = None  # without a trailing /

    def url(self, kind: str) -> str | None:
        """Where ``kind``'s provider posts receipts, if receipts are on and public_url set."""
        if self.token is None or not self.public_url:
            return None
        return f"{self.public_url}/receipts/{kind}/{self.token.reveal()}"


@dataclass(frozen=True, slots=True)
class TemplateConfig:
    name: str
    params: tuple[str, ...] = ()
    on_unknown: Literal["stop", "failover"] = "stop"
    mode: Literal["sync", "async"] = "sync"  # a request's "mode" overrides it
    ttl: float | None = None  # async: how long it may wait (None: the request's, else 1h)


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    settings: ProviderSettings
    cls: type[Provider]
    priority: int = 1
    weight: float = 1.0
    enabled: bool = True
    timeout: float = 5.0
    breaker: BreakerSettings = field(default_factory=BreakerSettings)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def type(self) -> str:
        return self.settings.type


@dataclass(frozen=True, slots=True)
class RouteConfig:
    providers: tuple[str, ...]
    templates: tuple[str, ...] = ()  # glob patterns; empty: any
    countries: tuple[str, ...] = ()  # ISO 3166 regions; empty: any

    def matches(self, template: str, countries: frozenset[str]) -> bool:
        if self.templates and not any(fnmatch.fnmatchcase(template, p) for p in self.templates):
            return False
        return not self.countries or countries <= set(self.countries)


@dataclass(frozen=True, slots=True)
class Config:
    """One validated load of ``config.yaml``."""

    source: str
    server: ServerConfig = field(default_factory=ServerConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    region: str = "CN"
    timeout: float = 5.0
    deadline: float = 15.0
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    templates: Mapping[str, TemplateConfig] = field(default_factory=dict)
    providers: tuple[ProviderConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    emulated: bool = False
    storage: StorageConfig = field(default_factory=StorageConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)  # SPEC §10: limits, countries
    receipts: ReceiptsConfig = field(default_factory=ReceiptsConfig)

    def provider(self, name: str) -> ProviderConfig | None:
        return next((p for p in self.providers if p.name == name), None)


@dataclass(frozen=True, slots=True)
class Emulation:
    """Where ``--emulate`` points providers of each type, and the credentials it fills in."""

    endpoints: Mapping[str, str]  # provider type -> emulator base URL
    credentials: Mapping[str, Mapping[str, str]]  # provider type -> key -> value
    options: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # receipts: a token made up per process when the config's is unset, and the gateway's own
    # address for Huawei's statusCallback when the config names none
    receipt_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    public_url: str | None = None


def profile_path(path: Path, profile: str) -> Path:
    """``config.yaml`` + ``prod`` -> ``config.prod.yaml`` beside it."""
    return path.with_name(f"{path.stem}.{profile}{path.suffix}")


def load_config(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    emulation: Emulation | None = None,
    profile: str | None = None,
) -> Config:
    """Read, substitute and validate a config file; raise ConfigError listing every problem.

    With ``profile``, ``config.PROFILE.yaml`` (when present) is deep-merged over the file:
    mappings merge key by key, lists and scalars replace. Relative paths in the config are
    relative to the config file's folder.
    """
    path = Path(path)
    raw = _parse(_read(path), str(path))
    overlay = profile_path(path, profile) if profile else None
    if overlay is not None and overlay.exists():
        over = _parse(_read(overlay), str(overlay))
        if over is not None:
            if not isinstance(over, Node) or not isinstance(raw, Node | None):
                raise ConfigError([ConfigProblem(str(overlay), getattr(over, "line", 1), "",
                                                 "the top level must be a mapping")])
            tag(over, str(overlay))
            raw = merge(raw if raw is not None else _empty_node(), over)
    return _validate(raw, str(path), env, emulation, path.resolve().parent)


def parse_config(
    text: str,
    source: str = "config.yaml",
    env: Mapping[str, str] | None = None,
    emulation: Emulation | None = None,
) -> Config:
    """Validate YAML text; ``source`` names the file in errors."""
    return _validate(_parse(text, source), source, env, emulation, Path(source).parent)


def _read(path: Path) -> str:
    try:
        return read(path)
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(str(path), 0, "", "file not found")]) from None
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, or too large
        raise ConfigError([ConfigProblem(str(path), 0, "", f"cannot read: {exc}")]) from None


def _parse(text: str, source: str) -> Any:
    try:
        return parse(text)
    except YamlSyntaxError as exc:
        raise ConfigError([ConfigProblem(source, exc.line, "", f"invalid YAML: {exc}")]) from None


def _empty_node() -> Node:
    node = Node()
    node.key_lines = {}
    return node


def _validate(raw: Any, source: str, env: Mapping[str, str] | None,
              emulation: Emulation | None, base: Path) -> Config:
    if raw is None:
        raw = _empty_node()
    check = Checker(source, env)
    if not isinstance(raw, Node):
        check.problem(getattr(raw, "line", 1), "", "the top level must be a mapping")
        raise ConfigError(check.problems)
    config = _build(check, raw, source, emulation, base)
    if check.problems:
        raise ConfigError(check.problems)
    return config


_TOP = ("server", "logging", "defaults", "templates", "providers", "routes", "storage",
        "limits", "countries", "receipts")


def _build(check: Checker, raw: Node, source: str, emulation: Emulation | None,
           base: Path) -> Config:
    check.keys(raw, "", _TOP)
    server = _server(check, check.mapping(raw, "server"))
    logging_ = _logging(check, check.mapping(raw, "logging"), base)
    node = check.mapping(raw, "defaults")
    defaults = check.section(node, "defaults", Defaults)
    breaker = _breaker(check, _mapping_in(node, "breaker"), "defaults.breaker",
                       BreakerSettings(), defaults.breaker)
    region, timeout, deadline = defaults.region, defaults.timeout, defaults.deadline
    templates = _templates(check, check.mapping(raw, "templates"))
    providers = _providers(check, raw, templates, breaker, timeout, emulation)
    routes = _routes(check, raw, providers, templates)
    receipts = _receipts(check, check.mapping(raw, "receipts"), emulation)
    providers = _called_back(providers, receipts)
    for name in templates:
        if providers and not any(p.cls.can_map(p.settings, name) for p in providers):
            check.problem(check.mapping(raw, "templates").line_of(name), f"templates.{name}",
                          "no provider can send it: map it under a provider's 'templates'")
    return Config(
        source=source, server=server, logging=logging_, region=region, timeout=timeout,
        deadline=deadline, breaker=breaker, templates=templates, providers=providers,
        routes=routes, emulated=emulation is not None,
        storage=_storage(check, check.mapping(raw, "storage"), base),
        limits=read_limits(check, raw, templates), receipts=receipts,
    )


def _server(check: Checker, node: Node) -> ServerConfig:
    read = check.section(node, "server", Server)
    keys = read_api_keys(check, node)
    secret = read_callback_secret(check, node, read.callback_hosts)
    return ServerConfig(api_keys=keys, callback_secret=secret,
                        **read.model_dump(exclude={"api_keys", "callback_secret"}))


def _logging(check: Checker, node: Node, base: Path) -> LoggingConfig:
    read = check.section(node, "logging", Logging)
    file = None if "file" in node and node["file"] in (None, "") else read.file
    return LoggingConfig(
        level=read.level, file=str(base / file) if file else None,  # absolute stays absolute
        max_bytes=read.max_bytes, backups=read.backups,
    )


def _storage(check: Checker, node: Node, base: Path) -> StorageConfig:
    read = check.section(node, "storage", Storage)
    return StorageConfig(url=read.url, base=base, retention=read.retention,
                         idempotency_ttl=read.idempotency_ttl, keep_params=read.keep_params,
                         workers=read.workers, lease=read.lease)


_TOKEN = re.compile(r"[A-Za-z0-9._~-]{16,128}", re.ASCII)


def _receipts(check: Checker, node: Node, emulation: Emulation | None) -> ReceiptsConfig:
    read = check.section(node, "receipts", Receipts)
    token = check.string(node, "token", "receipts", secret=True, unset_ok=True)
    if not token and emulation is not None:
        token = emulation.receipt_token
    if token and not _TOKEN.fullmatch(token):  # never quoted: it is a secret
        check.problem(node.line_of("token"), "receipts.token",
                      "must be 16-128 letters, digits or ._~- (it is part of a URL)")
        token = ""
    public = (read.public_url or (emulation.public_url if emulation else None) or "").rstrip("/")
    if public and endpoint_problem(public):
        check.problem(node.line_of("public_url"), "receipts.public_url",
                      str(endpoint_problem(public)))
        public = ""
    if read.public_url and not token:
        check.problem(node.line_of("public_url"), "receipts.public_url",
                      "set receipts.token too: the receipt URLs carry it")
    return ReceiptsConfig(Secret(token) if token else None, public or None)


def _called_back(providers: tuple[ProviderConfig, ...],
                 receipts: ReceiptsConfig) -> tuple[ProviderConfig, ...]:
    """Huawei providers get ``status_callback`` (our receipt URL) unless they name their own."""
    url = receipts.url("huawei")
    if url is None:
        return providers
    out = []
    for p in providers:
        if p.type == "huawei" and "status_callback" in p.cls.optional_options \
                and not p.settings.options.get("status_callback"):
            options = {**p.settings.options, "status_callback": url}
            p = replace(p, settings=replace(p.settings, options=options))
        out.append(p)
    return tuple(out)


def _breaker(check: Checker, node: Node, path: str, base: BreakerSettings,
             written: Breaker | None = None) -> BreakerSettings:
    """``base`` with what ``node`` writes (inherited values were checked where written)."""
    if written is None:
        written = check.section(node, path, Breaker)
    settings = replace(base, **written.model_dump(exclude_none=True))
    if ("open_for" in node or "max_open_for" in node) \
            and settings.max_open_for < settings.open_for:
        check.problem(node.line_of("max_open_for"), f"{path}.max_open_for",
                      "must be at least open_for")
    return settings


def _templates(check: Checker, node: Node) -> dict[str, TemplateConfig]:
    out: dict[str, TemplateConfig] = {}
    for name, body in node.items():
        path = f"templates.{name}"
        read = check.section(check.as_mapping(body, node.line_of(name), path), path, Template)
        out[name] = TemplateConfig(name, read.params, read.on_unknown, read.mode, read.ttl)
    return out


@functools.cache
def entry_model(cls: type[Provider]) -> type[ProviderEntry]:
    """ProviderEntry with ``cls``'s options (read by the builder: they may be structured)."""
    options: dict[str, Any] = {key: (Annotated[Any, RAW], None)
                               for key in (*cls.required_options, *cls.optional_options)}
    return create_model(f"{cls.__name__} entry", __base__=ProviderEntry, **options)


def _mapping_in(node: Node, key: str) -> Node:
    """``node[key]`` if it is a mapping; a wrong one was reported by its section already."""
    value = node.get(key)
    return value if isinstance(value, Node) else _empty_node()


def _providers(
    check: Checker, raw: Node, templates: Mapping[str, TemplateConfig],
    breaker: BreakerSettings, timeout: float, emulation: Emulation | None,
) -> tuple[ProviderConfig, ...]:
    items = raw.get("providers")
    if items is None:
        check.problem(raw.line, "providers", "at least one provider is required")
        return ()
    if not isinstance(items, Seq):
        check.problem(raw.line_of("providers"), "providers", "must be a list")
        return ()
    out: list[ProviderConfig] = []
    seen: set[str] = set()
    for index, (item, line) in enumerate(zip(items, items.item_lines, strict=True)):
        spec = check.as_mapping(item, line, f"providers[{index}]")
        provider = _provider(check, spec, index, templates, breaker, timeout, emulation)
        if provider is None:
            continue
        if provider.name in seen:
            check.problem(spec.line_of("name"), f"providers[{index}].name",
                          f"duplicate provider name {shown(provider.name)}")
            continue
        seen.add(provider.name)
        out.append(provider)
    if not out and not check.problems:
        check.problem(raw.line_of("providers"), "providers", "at least one provider is required")
    return tuple(out)


def _provider(
    check: Checker, spec: Node, index: int, templates: Mapping[str, TemplateConfig],
    breaker: BreakerSettings, timeout: float, emulation: Emulation | None,
) -> ProviderConfig | None:
    name = check.string(spec, "name", f"providers[{index}]", required=True)
    path = f"providers.{name or index}"
    type_ = check.string(spec, "type", path, required=True)
    if not name or not type_:
        return None
    try:
        cls = resolve_provider_class(type_)
    except Exception as exc:  # importing a user's module can raise anything (":X": ValueError)
        check.problem(spec.line_of("type"), f"{path}.type", str(exc) or type(exc).__name__)
        return None
    read = check.section(spec, path, entry_model(cls))
    fills = _emulated(emulation, type_)
    enabled = read.enabled  # a disabled example may lack secrets
    creds = check.mapping(spec, "credentials", path)
    check.keys(creds, f"{path}.credentials", cls.credential_keys)
    credentials: dict[str, Secret] = {}
    for key in cls.credential_keys:
        value = check.string(creds, key, f"{path}.credentials", secret=True, unset_ok=True)
        value = value or fills.credentials.get(key, "")
        if not value and enabled:
            line = creds.line_of(key) if key in creds else spec.line_of("credentials")
            check.missing(line, f"{path}.credentials.{key}", creds.get(key))
        credentials[key] = Secret(value)
    options: dict[str, Any] = {}
    structured = getattr(cls, "structured_options", ())  # mappings kept as written (type: http)
    for key in (*cls.required_options, *cls.optional_options):
        if key in structured and isinstance(spec.get(key), dict):
            options[key] = spec[key]
            continue
        value = check.string(spec, key, path, unset_ok=True) or fills.options.get(key, "")
        if not value and enabled and (key in cls.required_options
                                      or _names_unset(check, spec.get(key))):
            check.missing(spec.line_of(key), f"{path}.{key}", spec.get(key))
        if value:
            options[key] = value
    tmpl_node = check.mapping(spec, "templates", path)
    mapped = {str(k): check.string(tmpl_node, str(k), f"{path}.templates", required=True,
                                   line=tmpl_node.line_of(k))
              for k in tmpl_node}
    for logical in mapped:
        if logical not in templates:
            check.problem(tmpl_node.line_of(logical), f"{path}.templates.{logical}",
                          f"no template {shown(logical)} is defined under 'templates'")
    endpoint = check.string(spec, "endpoint", path) or None
    if endpoint:
        refused = endpoint_problem(endpoint)
        if refused:
            check.problem(spec.line_of("endpoint"), f"{path}.endpoint", refused)
    if fills.endpoint:
        endpoint = fills.endpoint
    settings = ProviderSettings(name, type_, endpoint, credentials, mapped, options)
    for key, message in getattr(cls, "check_options", lambda _o, _e: [])(options, endpoint):
        check.problem(spec.line_of(key.partition(".")[0]), f"{path}.{key}", message)
    return ProviderConfig(
        settings=settings, cls=cls,
        priority=read.priority, weight=read.weight, enabled=enabled,
        timeout=timeout if read.timeout is None else read.timeout,
        breaker=_breaker(check, _mapping_in(spec, "breaker"), f"{path}.breaker", breaker,
                         read.breaker),
    )


def _names_unset(check: Checker, raw: Any) -> bool:
    return isinstance(raw, str) and bool(substitute(raw, check.env).missing)


@dataclass(frozen=True, slots=True)
class _Fills:
    endpoint: str | None = None
    credentials: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)


def _emulated(emulation: Emulation | None, type_: str) -> _Fills:
    if emulation is None or type_ not in emulation.endpoints:
        return _Fills()
    return _Fills(emulation.endpoints[type_], emulation.credentials.get(type_, {}),
                  emulation.options.get(type_, {}))


def _routes(
    check: Checker, raw: Node, providers: tuple[ProviderConfig, ...],
    templates: Mapping[str, TemplateConfig],
) -> tuple[RouteConfig, ...]:
    items = raw.get("routes")
    if items is None:
        return ()
    if not isinstance(items, Seq):
        check.problem(raw.line_of("routes"), "routes", "must be a list")
        return ()
    by_name = {p.name: p for p in providers}
    out = []
    for index, (item, line) in enumerate(zip(items, items.item_lines, strict=True)):
        path = f"routes[{index}]"
        spec = check.as_mapping(item, line, path)
        read = check.section(spec, path, Route)
        patterns = read.match.template if read.match else ()
        countries = tuple(c.upper() for c in read.match.country) if read.match else ()
        names = read.providers
        if not names:
            check.problem(spec.line_of("providers"), f"{path}.providers",
                          "a route needs at least one provider")
        for name in names:
            if name not in by_name:
                check.problem(spec.line_of("providers"), f"{path}.providers",
                              f"unknown provider {shown(name)}; "
                              f"known: {', '.join(by_name) or 'none'}")
        matched = [t for t in templates if not patterns
                   or any(fnmatch.fnmatchcase(t, p) for p in patterns)]
        for name in names:
            provider = by_name.get(name)
            unmappable = [t for t in matched if provider and not provider.cls.can_map(
                provider.settings, t)]
            if provider and patterns and unmappable and len(unmappable) == len(matched):
                check.problem(spec.line_of("providers"), f"{path}.providers",
                              f"provider {shown(name)} cannot map template(s) "
                              f"{', '.join(unmappable)}: add them to its 'templates'")
        out.append(RouteConfig(names, patterns, countries))
    return tuple(out)
