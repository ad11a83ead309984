"""``config.yaml`` as pydantic models, for its published JSON Schema (``sms-gateway schema``).

Every section is the very model the checker validates it with (gateway/models_sections.py);
what the checker reads itself in a provider entry (its name, credentials, template ids and its
type's options, which depend on the type and on --emulate) is described here key for key, one
model per built-in type. An editor with the schema
(yaml-language-server reads the ``$schema`` line at the top of config.yaml) flags an unknown key
or a wrong type as it is typed. They describe the file as written: any value may be a
``${VAR}`` or ``${VAR:-default}`` reference, which the gateway substitutes at load. What needs
the whole file (a route naming a provider, a template some provider maps, a region's existence,
required credentials left to --emulate) stays with the checker: ``sms-gateway --check``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from gateway.limits import Countries, LimitEntry
from gateway.models_sections import (
    STRING,
    Defaults,
    Logging,
    ProviderEntry,
    Receipts,
    Route,
    Section,
    Server,
    Storage,
    Template,
    Text,
    written,
)
from providers import REGISTRY

Option = Annotated[Any, written(*STRING)]
Structured = Annotated[Any, written({"type": "object"}, {"type": "array"}, *STRING)]


class _Provider(ProviderEntry):
    """The keys the builder reads itself, as they may be written."""

    name: Text
    endpoint: Text | None = None
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
    creds: Any = create_model(f"{name.capitalize()}Credentials", __base__=Section, **keys)
    options: dict[str, Any] = {
        k: (Structured if k in structured else Option, None)
        for k in (*cls.required_options, *cls.optional_options)}
    fields: dict[str, Any] = {"type": (Literal[name], ...),
                              "credentials": (creds | None, None), **options}
    return create_model(f"{name.capitalize()}Provider", __base__=_Provider, **fields)


def config_model() -> type[BaseModel]:
    """The whole file; ``providers`` items are one built-in type's model or any other."""
    item: Any = CustomProvider
    for name in sorted(REGISTRY, reverse=True):
        item = _typed(name) | item
    fields: dict[str, Any] = {
        "server": (Server | None, None), "logging": (Logging | None, None),
        "defaults": (Defaults | None, None),
        "templates": (dict[str, Template | None] | None, None),
        "providers": (list[item], Field(min_length=1)), "routes": (list[Route] | None, None),
        "storage": (Storage | None, None), "receipts": (Receipts | None, None),
        "limits": (list[LimitEntry] | None, None), "countries": (Countries | None, None)}
    return create_model("SmsGatewayConfig", __base__=Section, **fields)


def config_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of config.yaml, as ``sms-gateway schema`` prints it."""
    schema = config_model().model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema,
            "title": "sms-gateway config.yaml",
            "description": "Edit-time checks; the whole file is checked by sms-gateway --check"}
