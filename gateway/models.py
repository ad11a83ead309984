"""The ``POST /sms`` body as pydantic models: one source for validation and for /openapi.json.

``SendBody`` is what ``validate.parse_send`` checks a decoded body against (its shape: a 400 when
wrong). The per-template variants below are built from it for the document: the same fields, the
template's name as a constant and exactly its params, so the published schema cannot drift from
what is enforced. Whether a number exists and a template is known depends on the running config;
that is checked after the shape (a 422).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from gateway.config import TemplateConfig
from gateway.phones import NUMBER_PATTERN

# The order of the fields is the order the 400s are reported in (first wrong field wins).
FIELDS = ("to", "receivers", "template", "params", "callback_url", "mode", "ttl")
ParamValue = str | int | float  # bool is not a number here (strict mode refuses it)
# The ttls a string may write: 1-999 ms, s or m, or 1-72 h (every one of them valid).
TTL_PATTERN = r"^([1-9][0-9]{0,2}(ms|s|m)|([1-9]|[1-6][0-9]|7[0-2])h)$"


class SendBody(BaseModel):
    """One send as a caller writes it; numbers are still raw text here."""

    # strict: no "1" for 1, no true for 1; NaN and Infinity pass (they are the caller's 422).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    to: list[str] | None = Field(
        default=None, description="the numbers: a list, or one comma-separated string")
    receivers: list[str] | None = Field(
        default=None, description="the seed's name for 'to' (give one of them, not both)")
    # not min_length: pydantic-core would then refuse a lone surrogate, which must reach the
    # 422 "unknown template" like any other name
    template: str = Field(json_schema_extra={"minLength": 1})
    params: dict[str, ParamValue] | None = None
    callback_url: str | None = Field(default=None, json_schema_extra={
        "format": "uri", "maxLength": 2048}, description=(
        "where the record is POSTed, signed, once sending is over and on delivery; its host "
        "must be in server.callback_hosts"))
    # Any here: a wrong mode or ttl is the caller's 422 naming the field (validate._async_errors)
    mode: Any = Field(None, description="async: answered 202 queued and sent by the outbox; "
                      "default: the template's mode, else sync",
                      json_schema_extra={"enum": ["sync", "async"]})
    ttl: Any = Field(None, description="async: how long it may wait to be sent, above 0 and "
                     "at most 72h (a number of seconds is also taken); default: the template's, "
                     "else 1h", json_schema_extra={"type": "string", "pattern": TTL_PATTERN})

    @field_validator("to", "receivers", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("to", "receivers")
    @classmethod
    def _some(cls, value: list[str] | None) -> list[str] | None:
        if value == []:
            raise ValueError("has no numbers")  # the only value_error 'to' has
        return value

    @field_validator("template")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value:
            raise ValueError("is empty")
        return value

    @property
    def numbers(self) -> list[str]:
        return self.to if self.to is not None else (self.receivers or [])


def _numbers(max_recipients: int) -> Any:
    one = Annotated[str, Field(pattern=f"^{NUMBER_PATTERN}$")]
    listed = Annotated[list[one], Field(min_length=1, max_length=max_recipients)]
    joined = Annotated[str, Field(pattern=f"^{NUMBER_PATTERN}(,{NUMBER_PATTERN})*$",
                                  description="one or more numbers, comma-separated")]
    return Annotated[listed | joined, Field(
        description="E.164 (+8613812345678) or national numbers, read in defaults.region; "
        "each must be a valid number (422 otherwise)")]


class _Documented(SendBody):
    # JSON Schema cannot say "not both" with optional fields alone
    model_config = ConfigDict(json_schema_extra={
        "oneOf": [{"required": ["to"]}, {"required": ["receivers"]}]})


def _variant(template: TemplateConfig, max_recipients: int) -> type[BaseModel]:
    """SendBody narrowed to one template: its name and exactly its params."""
    # any text can name a param: each is a field under its name as the alias
    names: dict[str, Any] = {f"p{i}": (str | float, Field(alias=p))
                             for i, p in enumerate(template.params)}
    params: Any = create_model(f"{template.name} params",
                               __config__=ConfigDict(extra="forbid", strict=True), **names)
    numbers = _numbers(max_recipients)
    fields: dict[str, Any] = {
        "to": (numbers, None), "receivers": (numbers, None),
        "template": (Literal[template.name], ...),
        "params": (params, ...) if template.params else (params | None, None)}
    # the model's name is the variant's title
    return create_model(template.name, __base__=_Documented, **fields)


def _inline(schema: Any, defs: Mapping[str, Any]) -> Any:
    """The schema with its ``$defs`` references replaced by what they name (none recurse)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
        return {k: _inline(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(v, defs) for v in schema]
    return schema


def request_schema(templates: Mapping[str, TemplateConfig], max_recipients: int) -> dict[str, Any]:
    """The JSON Schema of a send for the running config: one variant per template."""
    variants = []
    for _, template in sorted(templates.items()):
        schema = _variant(template, max_recipients).model_json_schema()
        variants.append(_inline(schema, schema.get("$defs", {})))
    return {
        "oneOf": variants or [{"type": "object"}],
        "description": "one template's message; the templates come from the running config",
        "example": {"to": ["+8613812345678"], "template": "verify_code",
                    "params": {"code": "123456"}},
    }
