"""Typed reads from line-numbered YAML that collect problems instead of stopping at the first."""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from gateway.models_sections import RAW, Section
from gateway.models_sections import kind as _kind
from gateway.yamlsrc import Node, shown, substitute

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One config error: where it is and what is wrong."""

    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(ValueError):
    """The config is invalid; ``problems`` lists every error found."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def _empty() -> Node:
    node = Node()
    node.key_lines = {}
    return node


class Checker:
    """Reads values out of Node mappings; each wrong value becomes a ConfigProblem, not an error."""

    def __init__(self, source: str, env: Mapping[str, str] | None) -> None:
        self.source = source
        self.env = env
        self.problems: list[ConfigProblem] = []
        self._expanded: dict[str, str] = {}  # repr of a ${VAR} expansion -> repr of its text

    def problem(self, line: int, key: str, message: str) -> None:
        # Errors reach /status, the dashboard and the log: quote what was written, never what
        # a ${VAR} expanded to (a secret's variable in the wrong field must not leak it).
        for expanded, written in self._expanded.items():
            message = message.replace(expanded, written)
        # a line from a profile overlay (config.NAME.yaml) names its own file
        self.problems.append(ConfigProblem(getattr(line, "file", self.source), line, key, message))

    def keys(self, node: Node, path: str, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        for key in node:
            if key not in allowed:
                self.problem(node.line_of(key), _join(path, key),
                             f"unknown key; expected one of: {', '.join(allowed) or 'none'}")

    def as_mapping(self, value: Any, line: int, path: str) -> Node:
        if isinstance(value, Node):
            return value
        if value is not None:
            self.problem(line, path, f"must be a mapping, not {_kind(value)}")
        empty = _empty()
        empty.line = line
        return empty

    def mapping(self, node: Node, key: str, path: str = "") -> Node:
        value = node.get(key)
        out = self.as_mapping(value, node.line_of(key), _join(path, key))
        if value is None:
            out.line = node.line_of(key)
        return out

    def _text(self, value: Any, line: int, path: str, unset_ok: bool = False) -> Any:
        """``${VAR}`` substituted; an unset variable without a default is an error naming it,
        unless the caller (``unset_ok``) fills the value another way or reports it itself."""
        if not isinstance(value, str):
            return value
        result = substitute(value, self.env)
        if result.value != value:
            self._expanded[shown(result.value)] = shown(value)
        if result.missing and not unset_ok:
            self.unset(line, path, result.missing)
        return result.value

    def unset(self, line: int, path: str, names: list[str]) -> None:
        """Environment variables a value names are unset and have no ``:-default``."""
        self.problem(line, path, f"environment variable(s) not set: {', '.join(names)} "
                                 f"(write ${{{names[0]}:-default}} to give a default)")

    def string(
        self, node: Node, key: str, path: str, default: str = "", *,
        required: bool = False, secret: bool = False, line: int | None = None,
        unset_ok: bool = False,
    ) -> str:
        if key not in node or node[key] is None:
            if required:
                self.problem(line or node.line, _join(path, key), "is required")
            return default
        value = self._text(node[key], node.line_of(key), _join(path, key), unset_ok)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            kind = "a value" if secret else _kind(value)
            self.problem(node.line_of(key), _join(path, key), f"must be a string, not {kind}")
            return default
        return str(value)

    def string_list(self, node: Node, key: str, path: str, *, secret: bool = False,
                    unset_ok: bool = False) -> list[str]:
        value = node.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.problem(node.line_of(key), _join(path, key), "must be a list of strings")
            return []
        out = []
        for item in value:
            text = self._text(item, node.line_of(key), _join(path, key), unset_ok)
            if not isinstance(text, str | int) or isinstance(text, bool):
                kind = "a value" if secret else _kind(text)
                self.problem(node.line_of(key), _join(path, key), f"items must be strings: {kind}")
                continue
            out.append(str(text))
        return out

    def missing(self, line: int, path: str, raw: Any) -> None:
        """A required value is empty; name the environment variables it came from, if any."""
        names = substitute(raw, self.env).missing if isinstance(raw, str) else []
        if names:
            self.unset(line, path, names)
        else:
            self.problem(line, path, "is required")

    def section(self, node: Node, path: str, model: type[M]) -> M:
        """``node`` read through a pydantic model (gateway/models_sections.py): unknown keys and
        ``${VAR}``s here, with the node's lines; each pydantic error becomes a problem at the
        line of the key its location names, and the value falls back to its default."""
        data = self._prepared(node, path, model)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors()
        for error in errors:
            target, where = node, path
            *parents, key = (str(part) for part in error["loc"])
            for part in parents:
                target, where = target[part], _join(where, part)
            # ours say what is wrong in the checker's words; pydantic would prefix "Value error"
            ours = error["type"] == "value_error"
            message = str(error["ctx"]["error"]) if ours else error["msg"]
            self.problem(target.line_of(key), _join(where, key), message)
        for error in errors:  # without what was wrong: the defaults are valid
            *parents, key = (str(part) for part in error["loc"])
            holder = data
            for part in parents:
                holder = holder[part]
            holder.pop(key, None)
        return model.model_validate(data)

    def _prepared(self, node: Node, path: str, model: type[BaseModel]) -> dict[str, Any]:
        fields = model.model_fields
        self.keys(node, path, fields)
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key not in fields or value is None:  # an empty value is the default
                continue
            where, line = _join(path, key), node.line_of(key)
            inner = _section_in(fields[key].annotation)
            if RAW in fields[key].metadata:
                out[key] = value
            elif inner is not None:
                out[key] = self._prepared(self.as_mapping(value, line, where), where, inner)
            elif isinstance(value, list):
                out[key] = [self._text(item, line, where) for item in value]
            else:
                out[key] = self._text(value, line, where)
        return out


def _section_in(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, Section):
            return candidate
    return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
