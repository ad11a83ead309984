"""Hostile and careless configs (issue 8, items 4, 8, 13, 15, 17): through ``--check`` and
startup as a subprocess, and through the loader the reload uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from gatewayproc import run_cli, running, sandbox_config

from conftest import Harness, build_config
from gateway.config import ConfigError, load_config, parse_config
from gateway.reload import reload_now
from gateway.yamlsrc import MAX_BYTES

BASE = sandbox_config()

# Six levels of ten: a million values once aliases are expanded, 7 lines as written.
BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
defaults: {timeout: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]}
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "conf.yaml", env=env or {})
    return [str(p) for p in info.value.problems]


def one_line_error(result: object) -> str:
    """The process failed the way every startup failure must: exit 2, no traceback."""
    assert getattr(result, "returncode", None) == 2
    err: str = getattr(result, "stderr", "")
    assert "Traceback" not in err, err
    return err


# -- item 4: alias bombs and huge files --------------------------------------------------------

def test_check_refuses_an_alias_bomb_with_a_short_message(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(BOMB)
    err = one_line_error(run_cli("--config", str(config), "--check"))
    assert "aliases expand to more than" in err
    assert len(err) < 500  # never the expanded value


async def test_a_bomb_on_reload_is_rejected_and_the_gateway_keeps_serving(gw: Harness) -> None:
    assert gw.gateway.config_path is not None
    gw.gateway.config_path.write_text(BOMB)
    assert not await reload_now(gw.gateway)
    error = gw.gateway.runtime.reload.error or ""
    assert "aliases expand to more than" in error and len(error) < 500
    assert (await gw.send()).status == 200


async def test_a_reload_says_which_server_settings_wait_for_a_restart(
        gw: Harness, caplog: pytest.LogCaptureFixture) -> None:
    assert gw.gateway.config_path is not None
    text = build_config(server={"max_connections": 9})
    gw.gateway.config_path.write_text(text)
    assert await reload_now(gw.gateway)
    assert "server.max_connections changed: applied at the next start" in caplog.text


def test_an_oversized_config_file_is_refused_unread(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(BASE + "#" * MAX_BYTES)
    err = one_line_error(run_cli("--config", str(config), "--check"))
    assert "larger than" in err


def test_error_messages_quote_values_briefly() -> None:
    found = problems(BASE + "defaults: {timeout: [" + ", ".join(["x" * 100] * 500) + "]}\n")
    assert any("defaults.timeout" in p for p in found)
    assert all(len(p) < 300 for p in found)


# -- item 8: unset variables, endpoints ---------------------------------------------------------

def test_an_unset_variable_anywhere_is_an_error_naming_it(tmp_path: Path) -> None:
    text = BASE.replace("{name: box, type: sandbox}",
                        "{name: box, type: sandbox, timeout: '${BOX_TIMEOUT}'}")
    found = problems(text)
    assert any(re.match(r"conf.yaml:\d+: providers.box.timeout: environment variable\(s\) not "
                        r"set: BOX_TIMEOUT", p) for p in found), found
    assert parse_config(text.replace("${BOX_TIMEOUT}", "${BOX_TIMEOUT:-2s}"), env={}) \
        .providers[0].timeout == 2
    config = tmp_path / "config.yaml"
    config.write_text(text)
    err = one_line_error(run_cli("--config", str(config), "--check", env={"BOX_TIMEOUT": ""}))
    assert "BOX_TIMEOUT" in err


def test_unset_template_ids_and_options_are_errors() -> None:
    text = """\
templates:
  verify_code: {params: [code]}
providers:
  - name: hw
    type: huawei
    credentials: {app_key: k, app_secret: s}
    sender: s1
    signature: "${HW_SIGNATURE}"
    templates: {verify_code: "${HW_TEMPLATE}"}
"""
    found = "\n".join(problems(text))
    assert "conf.yaml:8: providers.hw.signature: environment variable(s) not set: HW_SIGNATURE" \
        in found
    assert "conf.yaml:9: providers.hw.templates.verify_code: environment variable(s) not set: " \
           "HW_TEMPLATE" in found


@pytest.mark.parametrize("endpoint", [
    "https://user:hunter2@sms.example.com/", "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/", "http://[fe80::1]:8080/", "http://2852039166/",
    "http://metadata.google.internal/",
])
def test_endpoints_with_credentials_or_metadata_addresses_are_refused(endpoint: str) -> None:
    text = f"""\
templates:
  verify_code: {{params: [code]}}
providers:
  - name: hw
    type: huawei
    endpoint: "{endpoint}"
    credentials: {{app_key: k, app_secret: s}}
    sender: s1
    templates: {{verify_code: abc}}
"""
    found = problems(text)
    assert any(p.startswith("conf.yaml:6: providers.hw.endpoint:") for p in found), found
    assert "hunter2" not in "".join(found)


def test_emulate_still_fills_unset_credentials() -> None:
    result = run_cli("--config", "config.yaml", "--check", "--emulate",
                     env={k: "" for k in ("ALIYUN_ACCESS_KEY_ID", "HUAWEI_APP_KEY")})
    assert result.returncode == 0, result.stderr


# -- item 13: paths relative to the config; startup failures ------------------------------------

async def test_a_relative_log_file_is_beside_the_config_wherever_it_starts(
        tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    config = folder / "config.yaml"
    config.write_text(sandbox_config(logging="  file: logs/gateway.log"))
    assert run_cli("--config", str(config), "--check", cwd=Path("/")).returncode == 0
    async with running(config, console=tmp_path / "console.log", cwd=Path("/")):
        pass
    assert "sms-gateway" in (folder / "logs" / "gateway.log").read_text()


def test_check_and_start_refuse_a_log_folder_that_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file where the log folder should be")
    config = tmp_path / "config.yaml"
    config.write_text(sandbox_config(logging="  file: blocked/gateway.log"))
    err = one_line_error(run_cli("--config", str(config), "--check"))
    assert "logging.file" in err and "blocked" in err
    err = one_line_error(run_cli("--config", str(config), "--port", "0"))
    assert len(err.strip().splitlines()) == 1 and "cannot open log file" in err


def test_a_port_in_use_is_a_one_line_failure(tmp_path: Path) -> None:
    import socket

    config = tmp_path / "config.yaml"
    config.write_text(BASE)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = one_line_error(run_cli("--config", str(config), "--port", str(port)))
    assert len(err.strip().splitlines()) == 1 and f"cannot listen on 127.0.0.1:{port}" in err


# -- item 15: --env NAME, dotenv ----------------------------------------------------------------

def test_env_loads_the_named_overlay_deep_merged(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(BASE.replace("  api_keys: []", "  api_keys: []\n  max_recipients: 7")
                      + "defaults: {timeout: 3s, deadline: 9s}\n")
    (tmp_path / "config.prod.yaml").write_text(
        "server:\n  max_recipients: 50\ndefaults: {timeout: 1s}\n"
        "providers:\n  - {name: other, type: sandbox}\n")
    merged = load_config(config, env={}, profile="prod")
    assert merged.server.max_recipients == 50  # overlay wins
    assert merged.server.api_keys == ()  # the base's sibling key stays
    assert (merged.timeout, merged.deadline) == (1.0, 9.0)  # mappings merge key by key
    assert [p.name for p in merged.providers] == ["other"]  # lists replace
    assert load_config(config, env={}, profile="staging").server.max_recipients == 7  # absent
    assert run_cli("--config", str(config), "--env", "prod", "--check").returncode == 0


def test_an_overlay_error_names_the_overlay_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(BASE)
    (tmp_path / "config.prod.yaml").write_text("# production\nserver:\n  max_recipients: 0\n")
    err = one_line_error(run_cli("--config", str(config), "--env", "prod", "--check"))
    assert f"{tmp_path / 'config.prod.yaml'}:3: server.max_recipients: must be at least 1" in err


def test_env_is_not_an_abbreviation_of_env_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(BASE)
    result = run_cli("--config", str(config), "--env-f", "x", "--check")
    assert result.returncode == 2 and "unrecognized arguments: --env-f" in result.stderr


def test_a_malformed_env_file_line_is_named(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(BASE)
    env_file = tmp_path / ".env"
    env_file.write_text("GOOD=1\nthis is not an assignment\n")
    err = one_line_error(run_cli("--config", str(config), "--env-file", str(env_file),
                                 "--check"))
    assert f"{env_file}:2: expected KEY=VALUE" in err


# -- item 17: the typo's own line ---------------------------------------------------------------

@pytest.mark.parametrize(("text", "line"), [
    ("server:\n  max_recipients: 5\nlogging\n\n  # console only\n  file: null\n", 3),
    ("server:\n  max_recipients 5\n  shutdown_timeout: 2s\n", 2),
])
def test_a_missing_colon_is_reported_on_its_own_line(text: str, line: int) -> None:
    found = problems(text)
    assert found[0].startswith(f"conf.yaml:{line}: invalid YAML"), found
