"""``config.yaml`` as pydantic models, for its published JSON Schema (``sms-gateway schema``).

The sections with plain values are the very models the checker validates them with
(gateway/models_sections.py); providers and routes, which the checker reads itself (their keys
depend on a provider's type), are described here key for key. An editor with the schema
(yaml-language-server reads the ``$schema`` line at the top of config.yaml) flags an unknown key
or a wrong type as it is typed. They describe the file as written: any value may be a
``${VAR}`` or ``${VAR:-default}`` reference, which the gateway substitutes at load. What needs
the whole file (a route naming a provider, a template some provider maps, a region's existence,
required credentials left to --emulate) stays with the checker: ``sms-gateway --check``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from gateway.models_sections import (
    STRING,
    Breaker,
    Count0,
    Defaults,
    Logging,
    Positive,
    Route,
    Section,
    Server,
    Template,
    Text,
    case_free,
    written,
)
from providers import REGISTRY

# Only for the schema: the checker reads providers and routes itself (gateway/config.py).
Flag = Annotated[Any, written({"type": "boolean"}, {
    "type": "string", "pattern": case_free("true", "false", "yes", "no", "1", "0")})]
Weight = Annotated[Any, written({"type": "number", "minimum": 0})]
Option = Annotated[Any, written(*STRING)]
Structured = Annotated[Any, written({"type": "object"}, {"type": "array"}, *STRING)]


class _Provider(Section):
    name: Text
    priority: Count0 | None = Field(None, description="1 is tried first")
    weight: Weight = None
    enabled: Flag = None
    timeout: Positive | None = None
    endpoint: Text | None = None
    breaker: Breaker | None = None
    templates: dict[str, Text] | None = Field(
        None, description="logical template name -> the provider's template id or text")


class CustomProvider(_Provider):
    """A provider class of your own: its options are its own business."""

    model_config = ConfigDict(extra="allow")
    type: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
                               description="package.module:Class")]
    credentials: dict[str, Option] | None = None


def _typed(name: str) -> Any:
    """A built-in type's entry: its credentials and options, nothing else."""
    cls = REGISTRY[name]
    structured = set(getattr(cls, "structured_options", ()))
    keys: dict[str, Any] = {k: (Option, None) for k in cls.credential_keys}
    creds: Any = create_model(f"{name} credentials", __base__=Section, **keys)
    options: dict[str, Any] = {
        k: (Structured if k in structured else Option, None)
        for k in (*cls.required_options, *cls.optional_options)}
    fields: dict[str, Any] = {"type": (Literal[name], ...),
                              "credentials": (creds | None, None), **options}
    return create_model(f"{name} provider", __base__=_Provider, **fields)


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
    return create_model("config.yaml", __base__=Section, **fields)


def config_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of config.yaml, as ``sms-gateway schema`` prints it."""
    schema = config_model().model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema,
            "title": "sms-gateway config.yaml",
            "description": "Edit-time checks; the whole file is checked by sms-gateway --check"}
