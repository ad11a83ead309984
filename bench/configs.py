"""One builder for every gateway config.yaml the tests and the benchmarks write.

``gateway_config(...)`` renders a document made of plain dicts as YAML in one fixed layout:
block mappings, and flow style (``{a: 1}``, ``[x, y]``, long ones wrapped) for anything flat.
Tests edit its output textually (``.replace("priority: 2", ...)``), so the layout is part of
the contract.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from gateway.emulators import EMULATOR_CREDENTIALS, EMULATOR_OPTIONS

# Provider template ids the emulators accept, per gateway template.
TEMPLATE_IDS: dict[str, dict[str, str]] = {
    "aliyun": {"verify_code": "SMS_123456789", "notice": "SMS_987654321"},
    "huawei": {"verify_code": "8ff55eac1d0b478ab3c06c3c6a492300",
               "notice": "3b1ef0a1e5d44e0c9f6a8b7c6d5e4f30"},
}
TEMPLATES: dict[str, dict[str, Any]] = {
    "verify_code": {"params": ["code"], "on_unknown": "failover"},
    "notice": {"params": ["name", "time"]},
}
# Secrets named, never written: the shipped config's way (${VAR} from the environment).
ENV_CREDENTIALS: dict[str, dict[str, str]] = {
    "aliyun": {"access_key_id": "${ALIYUN_ACCESS_KEY_ID}",
               "access_key_secret": "${ALIYUN_ACCESS_KEY_SECRET}"},
    "huawei": {"app_key": "${HUAWEI_APP_KEY}", "app_secret": "${HUAWEI_APP_SECRET}"},
}
ENV_OPTIONS: dict[str, dict[str, str]] = {
    "aliyun": {"sign_name": "${ALIYUN_SIGN_NAME}"},
    "huawei": {"sender": "${HUAWEI_SENDER}"},
}


def provider(kind: str, *, priority: int | None = None, endpoint: str | None = None,
             templates: Sequence[str] = ("verify_code", "notice"), inline: bool = False,
             options: Mapping[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """An aliyun or huawei provider entry named after its type.

    ``inline`` writes the emulators' own credentials and options into the file (a config for
    a process that gets no environment); otherwise they are ``${VAR}`` references.
    ``options`` overrides sign_name/sender; ``extra`` adds keys (timeout, breaker, ...).
    """
    entry: dict[str, Any] = {"name": kind, "type": kind}
    if priority is not None:
        entry["priority"] = priority
    if endpoint is not None:
        entry["endpoint"] = endpoint
    entry["credentials"] = dict((EMULATOR_CREDENTIALS if inline else ENV_CREDENTIALS)[kind])
    entry.update(options or (EMULATOR_OPTIONS if inline else ENV_OPTIONS)[kind])
    entry["templates"] = {t: TEMPLATE_IDS[kind][t] for t in templates}
    entry.update(extra)
    return entry


def gateway_config(*, providers: Sequence[Mapping[str, Any]], server: Mapping[str, Any],
                   logging: Mapping[str, Any], defaults: Mapping[str, Any],
                   templates: Sequence[str] = ("verify_code", "notice"),
                   on_unknown: Mapping[str, str] | None = None,
                   storage: Mapping[str, Any] | None = None) -> str:
    """The config.yaml text; ``on_unknown`` overrides a template's policy. ``storage``
    defaults to the in-process store: a test or bench that wants a file names one."""
    chosen: dict[str, Any] = {}
    for name in templates:
        chosen[name] = dict(TEMPLATES[name])
        if on_unknown and name in on_unknown:
            chosen[name]["on_unknown"] = on_unknown[name]
    return render({"server": server, "logging": logging,
                   "storage": dict(storage or {"url": "memory"}), "defaults": defaults,
                   "templates": chosen, "providers": list(providers)})


def render(document: Mapping[str, Any]) -> str:
    """YAML in the fixed layout described above."""
    return "".join(_block(document, 0))


def _block(mapping: Mapping[str, Any], indent: int) -> Iterator[str]:
    pad = " " * indent
    for key, value in mapping.items():
        if _flat(value):
            yield _wrapped(f"{pad}{key}: ", value)
        elif isinstance(value, Mapping):
            yield f"{pad}{key}:\n"
            yield from _block(value, indent + 2)
        else:  # a list of mappings (and scalars: api_keys mixes both)
            yield f"{pad}{key}:\n"
            for item in value:
                if not isinstance(item, Mapping):
                    yield f"{pad}  - {_flow(item)}\n"
                    continue
                text = "".join(_block(item, indent + 4))
                yield f"{pad}  - {text[indent + 4:]}"


def _wrapped(head: str, value: Any, width: int = 100) -> str:
    """``head`` and the flow value, a long mapping wrapped after commas under its first item."""
    line = head + _flow(value)
    if len(line) <= width or not isinstance(value, Mapping):
        return line + "\n"
    items = [f"{k}: {_flow(v)}" for k, v in value.items()]
    indent = " " * (len(head) + 1)
    lines, current = [], head + "{" + items[0]
    for item in items[1:]:
        if len(current) + len(item) + 3 > width:
            lines.append(current + ",")
            current = indent + item
        else:
            current += ", " + item
    return "\n".join([*lines, current + "}"]) + "\n"


def _flat(value: Any) -> bool:
    """Scalars, lists of scalars, and mappings of those: written in flow style."""
    if isinstance(value, Mapping):
        return all(_scalar_or_list(v) for v in value.values())
    return _scalar_or_list(value)


def _scalar_or_list(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return all(not isinstance(v, Mapping | list | tuple) for v in value)
    return not isinstance(value, Mapping)


def _flow(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return _scalar(value)


_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*|[0-9]+(\.[0-9]+)?(ms|s|m|h)")
_RESERVED = frozenset({"true", "false", "null", "yes", "no", "on", "off", "y", "n"})


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _RESERVED:
        return text
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted one
