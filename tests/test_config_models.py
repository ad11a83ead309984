"""The plain-value sections of config.yaml (server, logging, defaults, breakers, templates) are
read through pydantic models (issue 9 item 6): every problem still names file, line and key in
the checker's words, ``${VAR}``s are substituted first and never shown expanded."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config
from gateway.models_config import config_schema
from gateway.models_sections import Breaker, Defaults, Logging, Server, Template


def wrong_everywhere() -> str:
    """A config with a wrong value in every section (not at module level: the schema test
    collects those as configs that must be valid)."""
    return """\
templates:
  verify_code: {params: [code, code], on_unknown: maybe}
  notice:
    params: {a: 1}
providers:
  - name: box
    type: sandbox
    breaker:
      window: soon
      failure_rate: 7
server:
  max_recipients: [1]
  pool_wait: 0
  shutdown_timeout: ${WAIT}
logging:
  level: loud
  bogus: 1
defaults: [1]
"""


def problems(text: str, env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml", env=env)
    return [str(p) for p in info.value.problems]


def test_each_wrong_value_is_named_by_file_line_and_key() -> None:
    assert sorted(problems(wrong_everywhere(), {"WAIT": "a while"})) == sorted([
        "c.yaml:12: server.max_recipients: must be an integer, not [1]",
        "c.yaml:13: server.pool_wait: must be above zero",
        "c.yaml:14: server.shutdown_timeout: '${WAIT}' is not a duration like 250ms, 5s or 2m",
        "c.yaml:17: logging.bogus: unknown key; expected one of: level, file, max_bytes, backups",
        "c.yaml:16: logging.level: must be DEBUG, INFO, WARNING, ERROR or CRITICAL",
        "c.yaml:18: defaults: must be a mapping, not a list",
        "c.yaml:2: templates.verify_code.params: params must be unique",
        "c.yaml:2: templates.verify_code.on_unknown: must be 'stop' or 'failover'",
        "c.yaml:4: templates.notice.params: must be a list of strings",
        "c.yaml:10: providers.box.breaker.failure_rate: must be above 0 and at most 1",
        "c.yaml:9: providers.box.breaker.window: 'soon' is not a duration like 250ms, 5s or 2m",
    ])


def test_values_are_read_after_substitution_and_empty_means_default() -> None:
    text = ("templates:\n  verify_code: {params: ['${P}']}\nproviders:\n"
            "  - {name: box, type: sandbox, breaker: {open_for: '${OPEN:-2s}'}}\n"
            "server:\n  max_recipients: ${N}\n  pool_size:\nlogging:\n  file: null\n")
    config = parse_config(text, env={"N": "7", "P": "code"})
    assert config.server.max_recipients == 7
    assert config.server.pool_size == 200
    assert config.logging.file is None
    assert config.templates["verify_code"].params == ("code",)
    assert config.providers[0].breaker.open_for == 2.0
    assert config.providers[0].breaker.window == 30.0  # inherited from the built-in default


def test_the_published_schema_is_made_from_the_same_models() -> None:
    published = config_schema()["$defs"]
    for model in (Server, Logging, Defaults, Breaker, Template):
        own = {k: v for k, v in model.model_json_schema().items() if k != "$defs"}
        assert published[model.__name__] == own
        assert own["additionalProperties"] is False


def test_routes_are_read_through_their_model() -> None:
    text = ("templates:\n  verify_code: {params: [code]}\nproviders:\n"
            "  - {name: box, type: sandbox}\nroutes:\n"
            "  - match: {template: 5, colour: red}\n    providers: box\n"
            "  - {match: {template: 'verify_*', country: [cn]}, providers: [box]}\n")
    assert problems(text, {}) == [
        "c.yaml:6: routes[0].match.colour: unknown key; expected one of: template, country",
        "c.yaml:6: routes[0].match.template: must be a list of strings",
    ]
    good = parse_config(text.replace("template: 5, colour: red", "country: US"))
    assert [(r.providers, r.templates, r.countries) for r in good.routes] == [
        (("box",), (), ("US",)), (("box",), ("verify_*",), ("CN",))]


def test_a_section_that_is_not_a_mapping_is_reported_once() -> None:
    text = ("templates:\n  verify_code: {params: [code]}\nproviders:\n"
            "  - {name: box, type: sandbox, breaker: 5}\ndefaults:\n  breaker: 5\n")
    assert problems(text, {}) == ["c.yaml:6: defaults.breaker: must be a mapping, not int",
                                  "c.yaml:4: providers.box.breaker: must be a mapping, not int"]


def test_a_provider_entry_is_read_through_its_types_model() -> None:
    text = ("templates:\n  verify_code: {params: [code]}\ndefaults:\n  timeout: 2s\nproviders:\n"
            "  - {name: box, type: sandbox, priority: first, weight: -1, enabled: maybe,\n"
            "     colour: red}\n"
            "  - {name: other, type: sandbox, enabled: 'no', breaker: {window: 5s}}\n")
    assert problems(text, {}) == [
        "c.yaml:7: providers.box.colour: unknown key; expected one of: name, type, priority, "
        "weight, enabled, timeout, endpoint, breaker, credentials, templates",
        "c.yaml:6: providers.box.priority: must be an integer, not 'first'",
        "c.yaml:6: providers.box.weight: must be at least 0.0",
        "c.yaml:6: providers.box.enabled: must be true or false",
    ]
    good = parse_config(text.replace("priority: first, weight: -1, enabled: maybe,\n"
                                     "     colour: red", "weight: 0.5"))
    box, other = good.providers
    assert (box.weight, box.enabled, box.timeout, other.enabled) == (0.5, True, 2.0, False)
    assert other.breaker.window == 5.0
