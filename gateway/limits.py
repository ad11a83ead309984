"""Limits against SMS pumping and OTP abuse (SPEC §10): the rules as ``config.yaml`` states them.

``limits:`` is a list of rules, each ``max`` sends in any ``window`` (sliding), counted per
destination ``number``, per number ``prefix`` (its first ``digits`` digits, country code
included), per destination ``country`` or per ``caller`` (API key), optionally for one
``template`` only. ``countries: {allow: [...]}`` refuses any other destination. This module
reads and checks them (file, line and key in every error); :mod:`gateway.limiter` applies them
and :mod:`gateway.store.limits` counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import phonenumbers
from pydantic import BeforeValidator, ConfigDict, Field

from gateway.models_sections import DURATION, Count0, Section, Text, problem, written
from gateway.schema import Checker
from gateway.yamlsrc import Node, Seq, parse_duration, shown

PER = ("number", "prefix", "country", "caller")
MIN_WINDOW = 1.0
MAX_WINDOW = 31 * 86400.0
MIN_DIGITS, MAX_DIGITS = 3, 15
_UNITS = ((86400, "d"), (3600, "h"), (60, "m"), (1, "s"))


def _per(value: Any) -> str:
    if value not in PER:
        raise problem(f"must be one of {', '.join(PER)}, not {shown(value)}")
    return str(value)


def _window(value: Any) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise problem(str(exc)) from None
    if not MIN_WINDOW <= seconds <= MAX_WINDOW:
        raise problem(f"must be from 1s to 31d, not {shown(value)}")
    return seconds


def _digits(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str) \
            or not str(value).strip().isdigit():
        raise problem(f"must be a whole number of digits, not {shown(value)}")
    digits = int(value)
    if not MIN_DIGITS <= digits <= MAX_DIGITS:
        raise problem(f"must be from {MIN_DIGITS} to {MAX_DIGITS}, not {digits}")
    return digits


def _countries(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise problem("must be a list of ISO 3166 codes such as CN")
    out = []
    for item in items:
        code = str(item).upper() if isinstance(item, str) else ""
        if code not in phonenumbers.SUPPORTED_REGIONS:
            raise problem(f"unknown region {shown(item)}; use ISO 3166 codes such as CN or HK")
        out.append(code)
    return tuple(dict.fromkeys(out))


Per = Annotated[Literal["number", "prefix", "country", "caller"], BeforeValidator(_per),
                written({"enum": list(PER)})]
Window = Annotated[float, BeforeValidator(_window), DURATION]
Digits = Annotated[int, BeforeValidator(_digits),
                   written({"type": "integer", "minimum": MIN_DIGITS, "maximum": MAX_DIGITS})]
Regions = Annotated[tuple[str, ...], BeforeValidator(_countries), written(
    {"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z]{2}$"}})]


class LimitEntry(Section):
    """One item of ``limits:``. The builder requires per, max and window itself (a wrong value
    falls back to its default in Checker.section, so every field has one)."""

    model_config = ConfigDict(extra="forbid", frozen=True,
                              json_schema_extra={"required": ["per", "max", "window"]})
    per: Per | None = Field(None, description="what is counted: number, prefix, country or caller")
    max: Count0 | None = Field(None, description="sends allowed in any interval of length window")
    window: Window | None = Field(None, description="1s to 31d, sliding")
    template: Text | None = Field(None, description="only sends of this template; none: all")
    digits: Digits | None = Field(None, description="per: prefix only: leading digits, 3-15")
    name: Text | None = Field(None, description="how errors, /status and metrics name it")


class Countries(Section):
    """``countries:``: where messages may go."""

    allow: Regions = Field((), description="ISO 3166 codes; any other destination is 422")


@dataclass(frozen=True, slots=True)
class LimitRule:
    """One rule: at most ``max`` sends in any ``window`` seconds, per ``per`` (and template)."""

    name: str
    per: str
    max: int
    window: float
    template: str | None = None
    digits: int | None = None

    @property
    def family(self) -> str:
        """The buckets this rule counts in start with this; rules that count the same thing
        (same per, digits and template, any max or window) share their buckets."""
        scope = f"prefix{self.digits}" if self.per == "prefix" else self.per
        return f"{scope}|{self.template or ''}|"

    def applies(self, template: str) -> bool:
        return self.template is None or self.template == template

    def describe(self) -> str:
        """``at most 5 per 1h``, as errors say it."""
        return f"at most {self.max} per {window_text(self.window)}"


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """The rules, and the countries messages may go to (empty: any)."""

    rules: tuple[LimitRule, ...] = ()
    allow: tuple[str, ...] = ()

    @property
    def horizon(self) -> float:
        """The longest window: counts older than this are never read again."""
        return max((r.window for r in self.rules), default=0.0)


def window_text(seconds: float) -> str:
    """60.0 -> ``1m``; 5400.0 -> ``90m``; 1.5 -> ``1.5s``."""
    for size, unit in _UNITS:
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def default_name(per: str, max_: int, window: float, template: str | None,
                 digits: int | None) -> str:
    """``number:verify_code:1/1m``, ``prefix8:50/1h``: what a rule without a name is called."""
    scope = f"prefix{digits}" if per == "prefix" else per
    return ":".join(filter(None, (scope, template, f"{max_}/{window_text(window)}")))


def read_limits(check: Checker, raw: Node, templates: Mapping[str, Any]) -> LimitsConfig:
    """``limits:`` and ``countries:`` of the file; every problem named with file and line."""
    countries = check.section(check.mapping(raw, "countries"), "countries", Countries)
    items = raw.get("limits")
    if items is None:
        return LimitsConfig((), countries.allow)
    if not isinstance(items, Seq):
        check.problem(raw.line_of("limits"), "limits", "must be a list of rules")
        return LimitsConfig((), countries.allow)
    rules: list[LimitRule] = []
    names: set[str] = set()
    for index, (item, line) in enumerate(zip(items, items.item_lines, strict=True)):
        rule = _rule(check, check.as_mapping(item, line, f"limits[{index}]"), index, templates)
        if rule is None:
            continue
        if rule.name in names:
            check.problem(item.line_of("name") if "name" in item else line,
                          f"limits[{index}].name", f"another rule is named {shown(rule.name)}; "
                          "give one a different name")
            continue
        names.add(rule.name)
        rules.append(rule)
    return LimitsConfig(tuple(rules), countries.allow)


def _rule(check: Checker, spec: Node, index: int,
          templates: Mapping[str, Any]) -> LimitRule | None:
    path = f"limits[{index}]"
    before = len(check.problems)
    for key in ("per", "max", "window"):
        if key not in spec or spec[key] is None:
            check.problem(spec.line, f"{path}.{key}", "is required")
    if len(check.problems) > before:
        check.keys(spec, path, LimitEntry.model_fields)
        return None
    read = check.section(spec, path, LimitEntry)
    if read.per == "prefix" and "digits" not in spec:
        check.problem(spec.line_of("per"), f"{path}.digits",
                      f"is required with per: prefix ({MIN_DIGITS}-{MAX_DIGITS} digits)")
    if read.per != "prefix" and "digits" in spec:
        check.problem(spec.line_of("digits"), f"{path}.digits", "only per: prefix takes digits")
    if read.template is not None and read.template not in templates:
        check.problem(spec.line_of("template"), f"{path}.template",
                      f"no template {shown(read.template)} is defined under 'templates'")
    if len(check.problems) > before or read.per is None or read.max is None \
            or read.window is None:
        return None
    name = read.name or default_name(read.per, read.max, read.window, read.template,
                                     read.digits)
    return LimitRule(name, read.per, read.max, read.window, read.template, read.digits)
