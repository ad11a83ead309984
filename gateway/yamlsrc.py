"""YAML that remembers where each key was written, plus ``${VAR}`` substitution and durations.

Config errors must name the file, the line and the key; PyYAML drops the marks after
construction, so mappings here are :class:`Node` dicts that keep each key's line.
"""

from __future__ import annotations

import os
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class Line(int):
    """A 1-based line number that also names its file: a profile overlay's lines do."""

    file: str

    def __new__(cls, value: int, file: str) -> Line:
        line = super().__new__(cls, value)
        line.file = file
        return line


class Node(dict[str, Any]):
    """A YAML mapping that knows its own line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class Seq(list[Any]):
    """A YAML sequence that knows its line and each item's line."""

    line: int = 0
    item_lines: list[int]


MAX_NODES = 20_000  # YAML nodes after alias expansion; the shipped config has ~150
MAX_BYTES = 1024 * 1024  # a config file larger than this is refused unread


class _Loader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences carry line numbers, refusing alias bombs."""

    def get_single_node(self) -> yaml.Node | None:
        node: yaml.Node | None = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand past MAX_NODES ("billion laughs").

    PyYAML shares an anchored object between its aliases, so loading is cheap; but any walk of
    the result (validation, an error message quoting it) pays the expanded size. Sizes are
    memoized per node, so this costs one pass over the nodes as written.
    """
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # a recursive alias counts once instead of looping
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        if total > MAX_NODES:
            raise yaml.MarkedYAMLError(
                None, None, f"aliases expand to more than {MAX_NODES} values: refused",
                node.start_mark)
        sizes[id(node)] = total
        return total

    size(root)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Node:
    loader.flatten_mapping(node)
    out = Node()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        key = key if isinstance(key, str) else shown(key)
        if key in out:
            raise yaml.MarkedYAMLError(
                "while reading a mapping", node.start_mark,
                f"duplicate key {shown(key)}", key_node.start_mark,
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> Seq:
    out = Seq(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


class YamlSyntaxError(ValueError):
    """The file is not YAML; carries the line of the problem."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def parse(text: str) -> Any:
    """Parse YAML text into Node/Seq/scalars, keeping line numbers."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        if exc.context == "while scanning a simple key" and exc.context_mark:
            # A key missing its colon: the scanner notices on the next token, which may be
            # lines further down (past blank lines and comments); the key is the typo.
            line = exc.context_mark.line + 1
        elif exc.problem == "mapping values are not allowed here" and line:
            line = _scalar_start(text.splitlines(), line)
        raise YamlSyntaxError(line, f"{exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(0, str(exc)) from None


def _scalar_start(lines: list[str], line: int) -> int:
    """``key value`` (colon forgotten) above ``other: x`` reads as one plain scalar spanning
    both lines, and the error points at the second line's colon: the typo is where the
    scalar starts, the first line above at the same indent that has no colon."""
    indent = len(lines[line - 1]) - len(lines[line - 1].lstrip())
    start = line
    for number in range(line - 1, 0, -1):
        above = lines[number - 1]
        if not above.strip() or above.lstrip().startswith("#"):
            continue
        if len(above) - len(above.lstrip()) != indent or ":" in above:
            break
        start = number
    return start


def tag(tree: Any, file: str) -> None:
    """Mark every line in a parsed tree as belonging to ``file`` (see :class:`Line`)."""
    if isinstance(tree, Node):
        tree.line = Line(tree.line, file)
        tree.key_lines = {k: Line(n, file) for k, n in tree.key_lines.items()}
        for value in tree.values():
            tag(value, file)
    elif isinstance(tree, Seq):
        tree.line = Line(tree.line, file)
        tree.item_lines = [Line(n, file) for n in tree.item_lines]
        for value in tree:
            tag(value, file)


def merge(base: Node, over: Node) -> Node:
    """Deep-merge ``over`` into ``base``: mappings merge key by key, anything else (lists,
    scalars, null) replaces the base's value whole. Returns ``base``, changed."""
    for key, value in over.items():
        below = base.get(key)
        if isinstance(below, Node) and isinstance(value, Node):
            merge(below, value)
        else:
            base[key] = value
            base.key_lines[key] = over.key_lines[key]
    return base


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class Substitution:
    """The result of ``${VAR}`` substitution in one string."""

    value: str
    missing: list[str] = field(default_factory=list)  # variables unset with no default


def substitute(text: str, env: Mapping[str, str] | None = None) -> Substitution:
    """Replace ``${VAR}`` and ``${VAR:-default}``; unset variables become "" and are listed."""
    environ = os.environ if env is None else env
    missing: list[str] = []

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                missing.append(name)
                return ""
            return default
        return value

    return Substitution(_VAR.sub(repl, text), missing)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """``250ms``, ``5s``, ``2m``, ``1h``, ``30d`` or a bare number of seconds, as seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 250ms, 5s or 2m")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{shown(value)} is not a duration like 250ms, 5s or 2m")
        seconds = float(match.group(1)) * _UNIT[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def read(path: Path) -> str:
    """Read the config file as UTF-8 text; refuse one over MAX_BYTES before reading it."""
    with path.open("rb") as stream:
        data = stream.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES // 1024} KiB: refused")
    return data.decode("utf-8")


_SHOWN = reprlib.Repr()  # keyword arguments need Python 3.12
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlist, _SHOWN.maxdict = 2, 40, 40, 4, 4


def shown(value: Any) -> str:
    """A bounded repr for error messages: a value from the file may be huge or deeply nested."""
    return _SHOWN.repr(value)
