"""``config.yaml`` as pydantic models, for its published JSON Schema (``sms-gateway schema``).

The models mirror what gateway/config.py accepts, key for key, so an editor with the schema
(yaml-language-server reads the ``$schema`` line at the top of config.yaml) flags an unknown key
or a wrong type as it is typed. They describe the file as written: any value may be a
``${VAR}`` or ``${VAR:-default}`` reference, which the gateway substitutes at load. What needs
the whole file (a route naming a provider, a template some provider maps, a region's existence,
required credentials left to --emulate) stays with the checker: ``sms-gateway --check``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from gateway.config import LEVELS
from providers import REGISTRY

# A value the environment fills in at load: ${VAR} or ${VAR:-default}, maybe with text around.
Env = Annotated[str, Field(pattern=r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}")]
Text = str | int | float  # a number is read as its text (a template id 1110)
Texts = list[Text] | Text  # one value is a list of one
Duration = Annotated[
    Annotated[float, Field(ge=0)]
    | Annotated[str, Field(pattern=r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$")] | Env,
    Field(description="250ms, 5s, 2m, 1h or a number of seconds")]


Digits = Annotated[str, Field(pattern=r"^\s*\d+\s*$")]  # read as an integer
Count0 = Annotated[int, Field(ge=0)] | Digits | Env
Count1 = Annotated[int, Field(ge=1)] | Digits | Env
Count1024 = Annotated[int, Field(ge=1024)] | Digits | Env


def _case_free(*words: str) -> str:
    """A regex matching any of ``words`` in any letter case (JSON Schema has no (?i))."""
    spelled = ("".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in w)
               for w in words)
    return f"^({'|'.join(spelled)})$"


Flag = bool | Annotated[str, Field(pattern=_case_free("true", "false", "yes", "no", "1", "0"))]
Level = Annotated[str, Field(pattern=_case_free(*LEVELS))]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Server(_Section):
    api_keys: Texts | None = Field(None, description="empty: no auth on POST /sms")
    max_recipients: Count1 | None = Field(None, description="numbers per request (100)")
    shutdown_timeout: Duration | None = Field(None, description="SIGTERM waits this long (10s)")
    pool_size: Count1 | None = Field(None, description="connections per provider host")
    pool_wait: Duration | None = Field(None, description="longest a send queues for one (1s)")
    header_timeout: Duration | None = Field(None, description="a request's headers (10s)")
    body_timeout: Duration | None = Field(None, description="a request's body (30s)")
    max_connections: Count1 | None = Field(None, description="open client connections")


class Logging(_Section):
    level: Level | None = None
    file: Text | None = Field(None, description="relative to the config's folder; null: none")
    max_bytes: Count1024 | None = None
    backups: Count0 | None = None


class Breaker(_Section):
    consecutive_failures: Count1 | None = None
    failure_rate: Annotated[float, Field(gt=0, le=1)] | Env | None = None
    minimum_calls: Count1 | None = None
    window: Duration | None = None
    open_for: Duration | None = None
    max_open_for: Duration | None = Field(None, description="at least open_for")
    half_open_probes: Count1 | None = None


class Defaults(_Section):
    region: Text | None = Field(None, description="ISO 3166 code for numbers without + (CN)")
    timeout: Duration | None = Field(None, description="per provider attempt (5s)")
    deadline: Duration | None = Field(None, description="whole request, across failovers")
    breaker: Breaker | None = None


class Template(_Section):
    params: Texts | None = Field(None, description="ordered, unique")
    on_unknown: Literal["stop", "failover"] | Env | None = None


class _Provider(_Section):
    name: Text
    priority: Count0 | None = Field(None, description="1 is tried first")
    weight: Annotated[float, Field(ge=0)] | Env | None = None
    enabled: Flag | Env | None = None
    timeout: Duration | None = None
    endpoint: Text | None = None
    breaker: Breaker | None = None
    templates: dict[str, Text] | None = Field(
        None, description="logical template name -> the provider's template id or text")


class CustomProvider(_Provider):
    """A provider class of your own: its options are its own business."""

    model_config = ConfigDict(extra="allow")
    type: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
                               description="package.module:Class")]
    credentials: dict[str, Text | None] | None = None


def _typed(name: str) -> Any:
    """A built-in type's entry: its credentials and options, nothing else."""
    cls = REGISTRY[name]
    structured = set(getattr(cls, "structured_options", ()))
    keys: dict[str, Any] = {k: (Text | None, None) for k in cls.credential_keys}
    creds: Any = create_model(f"{name} credentials", __base__=_Section, **keys)
    options: dict[str, Any] = {
        k: (dict[str, Any] | list[Any] | Text | None if k in structured else Text | None, None)
        for k in (*cls.required_options, *cls.optional_options)}
    fields: dict[str, Any] = {"type": (Literal[name], ...),
                              "credentials": (creds | None, None), **options}
    return create_model(f"{name} provider", __base__=_Provider, **fields)


class Route(_Section):
    class Match(_Section):
        template: Texts | None = Field(None, description="glob patterns (marketing_*)")
        country: Texts | None = Field(None, description="ISO 3166 codes")

    match: Match | None = None
    providers: Texts = Field(description="provider names, tried in this order")


def config_model() -> type[BaseModel]:
    """The whole file; ``providers`` items are one built-in type's model or any other."""
    item: Any = CustomProvider
    for name in sorted(REGISTRY, reverse=True):
        item = _typed(name) | item
    fields: dict[str, Any] = {
        "server": (Server | None, None), "logging": (Logging | None, None),
        "defaults": (Defaults | None, None),
        "templates": (dict[str, Template | None] | None, None),
        "providers": (list[item], Field(min_length=1)), "routes": (list[Route] | None, None)}
    return create_model("config.yaml", __base__=_Section, **fields)


def config_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of config.yaml, as ``sms-gateway schema`` prints it."""
    schema = config_model().model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema,
            "title": "sms-gateway config.yaml",
            "description": "Edit-time checks; the whole file is checked by sms-gateway --check"}
