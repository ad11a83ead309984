"""The JSON Schema of config.yaml (issue 9 item 6): printed by ``sms-gateway schema``, committed
as config.schema.json, named on config.yaml's first line for editors, and in step with the
checker: what the gateway loads the schema accepts; a wrong key or type it refuses."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator, ValidationError

from bench.configs import provider
from conftest import TEST_CONFIG, build_config
from gateway.config import ConfigError, parse_config

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
MINIMAL = ("templates:\n  verify_code: {params: [code]}\n"
           "providers:\n  - {name: box, type: sandbox}\n")


def schema_errors(text: str) -> list[str]:
    """Where the document breaks the schema: every innermost error of every alternative."""
    schema = json.loads((REPO / "config.schema.json").read_text(encoding="utf-8"))
    validator = Draft202012Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in _leaves(validator.iter_errors(yaml.safe_load(text)))]


def _leaves(errors: Iterable[ValidationError]) -> Iterator[ValidationError]:
    for error in errors:
        if error.context:
            yield from _leaves(error.context)
        else:
            yield error


def test_the_committed_schema_is_what_the_command_prints() -> None:
    printed = subprocess.run([sys.executable, "-m", "gateway", "schema"], capture_output=True,
                             text=True, check=True, cwd=REPO, timeout=60).stdout
    assert printed == (REPO / "config.schema.json").read_text(encoding="utf-8"), \
        "regenerate it: sms-gateway schema > config.schema.json"
    Draft202012Validator.check_schema(json.loads(printed))
    # editors resolve references by URI fragment: names without spaces or escapes
    assert all(re.fullmatch(r"#/\$defs/\w+", ref)
               for ref in re.findall(r'"\$ref": "([^"]*)"', printed)), printed


def test_the_shipped_config_names_the_schema_and_meets_it() -> None:
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    assert text.splitlines()[0] == "# yaml-language-server: $schema=./config.schema.json"
    assert schema_errors(text) == []


def _configs_in_tests() -> dict[str, str]:
    """Every config text a test module defines at its top level."""
    found = {}
    for path in sorted(TESTS.glob("test_*.py")):
        module = importlib.import_module(path.stem)
        for name, value in vars(module).items():
            if isinstance(value, str) and "providers:" in value:
                try:
                    document = yaml.safe_load(value)
                except yaml.YAMLError:  # a README, not a config
                    continue
                if isinstance(document, dict) and isinstance(document.get("providers"), list):
                    found[f"{path.stem}.{name}"] = value
    return found


BUILT = {
    "build_config": TEST_CONFIG,
    "inline credentials, overrides": build_config(
        server={"api_keys": ["k-one", "${KEY:-}"], "max_connections": 3},
        defaults={"deadline": 2.5},
        providers=[provider("aliyun", inline=True, timeout="200ms",
                            breaker={"failure_rate": 1, "open_for": "1s"}),
                   provider("huawei", priority=0, weight=0.5, enabled=False)]),
    **_configs_in_tests(),
}


@pytest.mark.parametrize("text", BUILT.values(), ids=BUILT.keys())
def test_every_config_the_tests_build_meets_the_schema(text: str) -> None:
    assert schema_errors(text) == []


# What the checker refuses for the shape of one value, the schema refuses too (at that key).
REFUSED = [
    ("server:\n  bogus: 1\n", "server"),
    ("server:\n  max_recipients: lots\n", "server.max_recipients"),
    ("server:\n  max_recipients: 0\n", "server.max_recipients"),
    ("defaults:\n  timeout: 5 parsecs\n", "defaults.timeout"),
    ("defaults:\n  breaker: {failure_rate: 2}\n", "defaults.breaker.failure_rate"),
    ("logging:\n  level: LOUD\n", "logging.level"),
    ("templates:\n  notice: {params: [a], on_unknown: retry}\n", "templates.notice.on_unknown"),
    ("routes:\n  - {match: {templates: [x]}, providers: [box]}\n", "routes.0.match"),
    ("bogus: 1\n", ""),
]


@pytest.mark.parametrize(("snippet", "where"), REFUSED)
def test_what_the_checker_refuses_the_schema_refuses(snippet: str, where: str) -> None:
    with pytest.raises(ConfigError):
        parse_config(MINIMAL + snippet, "conf.yaml", env={})
    found = schema_errors(MINIMAL + snippet)
    assert any(e.startswith(f"{where}: ") for e in found), found


@pytest.mark.parametrize("entry", [
    "{name: a, type: aliyun, sign_name: S, credentials: {access_key_id: x, secret: y}}",
    "{name: a, type: aliyun, sign_name: S, sender: x}",
    "{name: a, type: nosuch}",
    "{name: a, type: sandbox, priority: -1}",
    "{name: a, type: sandbox, enabled: maybe}",
])
def test_a_provider_entry_is_checked_against_its_type(entry: str) -> None:
    text = f"providers:\n  - {entry}\n"
    with pytest.raises(ConfigError):
        parse_config(text, "conf.yaml", env={"X": "1"})
    assert schema_errors(text) != []


def test_a_provider_class_of_your_own_may_take_any_option() -> None:
    document: dict[str, Any] = {"providers": [{"name": "mine", "type": "pkg.mod:Mine",
                                               "anything": {"x": 1}}]}
    assert schema_errors(json.dumps(document)) == []
