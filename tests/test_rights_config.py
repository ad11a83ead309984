"""``server.api_keys`` entries with names and rights: what the config check says of them."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config

MINIMAL = """\
templates:
  verify_code: {params: [code]}
providers:
  - {name: box, type: sandbox}
server:
  api_keys:
"""


def problems(keys: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + keys, "conf.yaml", env=env or {})
    return [str(p) for p in info.value.problems]


def test_named_keys_are_read_with_their_rights() -> None:
    config = parse_config(MINIMAL + """\
    - "${KEY}"
    - {name: ops, key: "${OPS_KEY}", rights: [send, read, read_all, read_numbers, admin]}
    - {name: quiet, key: "${QUIET:-}"}
""", "conf.yaml", env={"KEY": "k-plain", "OPS_KEY": "k-ops"})
    plain, ops = config.server.api_keys  # an empty ${QUIET:-} is a key that is off
    assert plain.reveal() == "k-plain" and plain.rights == {"send", "read"}
    assert ops.reveal() == "k-ops" and ops.name == "ops" and "admin" in ops.rights
    assert "k-ops" not in repr(config)


@pytest.mark.parametrize(("keys", "where", "words"), [
    ("    - k-one\n    - {name: ops, rights: [send]}\n", "conf.yaml:8: server.api_keys[1].key",
     "is required"),
    ("    - {name: ops, key: k, rights: [send, sudo]}\n", "conf.yaml:7: server.api_keys[0].rights",
     "unknown right(s) 'sudo'"),
    ("    - {name: ops, key: k, colour: red}\n", "conf.yaml:7: server.api_keys[0].colour",
     "unknown key"),
    ("    - {name: ops, key: '${OPS_KEY}'}\n", "conf.yaml:7: server.api_keys[0].key",
     "not set: OPS_KEY"),
])
def test_a_bad_entry_names_file_line_and_key(keys: str, where: str, words: str) -> None:
    found = problems(keys)
    assert any(p.startswith(f"{where}:") and words in p for p in found), found


def test_a_key_never_appears_in_a_problem() -> None:
    found = problems("    - {name: ops, key: '${OPS_KEY}', rights: [root]}\n",
                     env={"OPS_KEY": "s3cret-value"})
    assert found and not any("s3cret-value" in p for p in found)
