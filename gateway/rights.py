"""API keys with names and rights: what ``server.api_keys`` holds, and who a request is.

A plain string key may ``send`` and ``read`` its own messages; a mapping
``{name: ops, key: "${OPS_KEY}", rights: [...]}`` says what else. With no keys at all (auth off)
every caller may do everything except see full numbers (``read_numbers``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from gateway.models_sections import RIGHTS
from gateway.schema import Checker
from gateway.yamlsrc import Node, substitute
from providers.base import Secret

PLAIN = frozenset({"send", "read"})
AUTH_OFF = frozenset(RIGHTS) - {"read_numbers"}
_FIELDS = ("name", "key", "rights")


class ApiKey(Secret):
    """One key: a Secret (masked everywhere) with the name it is recorded by and its rights."""

    __slots__ = ("name", "rights")

    def __init__(self, value: str, name: str | None = None,
                 rights: frozenset[str] = PLAIN) -> None:
        super().__init__(value)
        self.name = name
        self.rights = rights

    @property
    def caller_id(self) -> str:
        """What records and Idempotency-Keys are kept under: the name, else a hash of the key.

        Named by the key itself, not its place in the list: a reload that reorders or removes
        keys leaves every caller's records and Idempotency-Keys where they were."""
        if self.name:
            return self.name
        return "key-" + hashlib.sha256(self.reveal().encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: ``id`` "" when auth is off."""

    id: str
    rights: frozenset[str]

    def may(self, right: str) -> bool:
        return right in self.rights


OPEN = Caller("", AUTH_OFF)


def read_api_keys(check: Checker, node: Node) -> tuple[ApiKey, ...]:
    """``server.api_keys``: each a string or a mapping; problems name the file, line and key."""
    written = node.get("api_keys")
    if written is None:
        return ()
    items = written if isinstance(written, list) else [written]
    lines = getattr(written, "item_lines", None) or [node.line_of("api_keys")] * len(items)
    keys = []
    for index, (item, line) in enumerate(zip(items, lines, strict=True)):
        key = (_mapping(check, item, f"server.api_keys[{index}]") if isinstance(item, Node)
               else _plain(check, item, line, "server.api_keys"))
        if key is not None and key.reveal():  # ${KEY:-} unset: this key is off
            keys.append(key)
    return tuple(keys)


def _secret(check: Checker, value: Any, line: int, path: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        check.problem(line, path, "must be a string or a mapping with name, key and rights")
        return None
    text = str(value)
    unset = substitute(text, check.env).missing
    if unset:  # an unset key must not turn auth off unnoticed; ${VAR:-} says it may
        check.problem(line, path, f"environment variable(s) not set: {', '.join(unset)} "
                                  f"(write ${{{unset[0]}:-}} to run without auth when it is unset)")
        return None
    return substitute(text, check.env).value


def _plain(check: Checker, item: Any, line: int, path: str) -> ApiKey | None:
    value = _secret(check, item, line, path)
    return None if value is None else ApiKey(value)


def _mapping(check: Checker, item: Node, path: str) -> ApiKey | None:
    check.keys(item, path, _FIELDS)
    if item.get("key") is None:
        check.problem(item.line, f"{path}.key", "is required (the key itself, e.g. ${OPS_KEY})")
        return None
    value = _secret(check, item["key"], item.line_of("key"), f"{path}.key")
    name = check.string(item, "name", path) or None
    rights = _rights(check, item, path)
    return None if value is None else ApiKey(value, name, rights)


def _rights(check: Checker, item: Node, path: str) -> frozenset[str]:
    if item.get("rights") is None:
        return PLAIN
    given = check.string_list(item, "rights", path)
    unknown = [r for r in given if r not in RIGHTS]
    if unknown:
        check.problem(item.line_of("rights"), f"{path}.rights",
                      f"unknown right(s) {', '.join(map(repr, unknown))}; "
                      f"expected some of: {', '.join(RIGHTS)}")
    return frozenset(r for r in given if r in RIGHTS)
