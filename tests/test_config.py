"""config.yaml: every error names file, line and key; env substitution; --check exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.config import ConfigError, load_config, parse_config
from gateway.yamlsrc import parse_duration

REPO = Path(__file__).resolve().parent.parent
CREDS = {"ALIYUN_ACCESS_KEY_ID": "id", "ALIYUN_ACCESS_KEY_SECRET": "top-secret-1",
         "ALIYUN_SIGN_NAME": "Sign", "HUAWEI_APP_KEY": "key", "HUAWEI_APP_SECRET": "top-secret-2",
         "HUAWEI_SENDER": "csms1"}

MINIMAL = """\
templates:
  verify_code: {params: [code]}
providers:
  - {name: box, type: sandbox}
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "conf.yaml", env=env or {})
    return [str(p) for p in info.value.problems]


def test_shipped_config_is_valid_with_credentials_set() -> None:
    config = load_config(REPO / "config.yaml", env=CREDS)
    assert [p.name for p in config.providers] == ["aliyun", "huawei", "tencent", "twilio"]
    assert [p.name for p in config.providers if p.enabled] == ["aliyun", "huawei"]
    assert config.templates["verify_code"].params == ("code",)
    assert config.templates["verify_code"].on_unknown == "failover"
    assert config.server.api_keys == ()  # ${SMS_GATEWAY_API_KEY:-} unset: auth off
    assert "top-secret-1" not in repr(config)


def test_missing_credentials_name_the_variables_and_lines() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(REPO / "config.yaml", env={})
    text = str(info.value)
    for name in ("ALIYUN_ACCESS_KEY_ID", "ALIYUN_ACCESS_KEY_SECRET", "ALIYUN_SIGN_NAME",
                 "HUAWEI_APP_KEY", "HUAWEI_APP_SECRET", "HUAWEI_SENDER"):
        assert name in text
    assert "config.yaml:" in text
    assert all(p.line > 0 for p in info.value.problems)


def test_env_defaults_and_substitution() -> None:
    text = MINIMAL + "server:\n  api_keys: ['${KEY:-fallback}', '${OTHER}']\n"
    config = parse_config(text, env={"OTHER": "k2"})
    assert [k.reveal() for k in config.server.api_keys] == ["fallback", "k2"]


@pytest.mark.parametrize(("snippet", "line", "key", "words"), [
    ("server:\n  bogus: 1\n", 6, "server.bogus", "unknown key"),
    ("server:\n  max_recipients: lots\n", 6, "server.max_recipients", "integer"),
    ("defaults:\n  timeout: 5 parsecs\n", 6, "defaults.timeout", "duration"),
    ("defaults:\n  breaker: {failure_rate: 2}\n", 6, "defaults.breaker.failure_rate", "at most 1"),
    ("routes:\n  - {match: {template: [x]}, providers: [nope]}\n", 6, "routes[0].providers",
     "unknown provider 'nope'"),
    ("defaults:\n  region: ZZ\n", 6, "defaults.region", "unknown region 'ZZ'"),
    ("server:\n  api_keys: ['${GATEWAY_KEY}']\n", 6, "server.api_keys",
     "not set: GATEWAY_KEY (write ${GATEWAY_KEY:-} to run without auth"),
])
def test_errors_name_file_line_and_key(snippet: str, line: int, key: str, words: str) -> None:
    found = problems(MINIMAL + snippet)
    assert any(p.startswith(f"conf.yaml:{line}: {key}:") and words in p for p in found), found


def test_provider_endpoints_and_template_ids_are_checked() -> None:
    text = MINIMAL.replace("  - {name: box, type: sandbox}\n", """\
  - name: ali
    type: aliyun
    endpoint: 123
    credentials: {access_key_id: a, access_key_secret: b}
    sign_name: S
    templates: {verify_code: [SMS_1]}
""")
    found = problems(text)
    assert any(p.startswith("conf.yaml:6: providers.ali.endpoint:") and "http" in p
               for p in found), found
    assert any(p.startswith("conf.yaml:9: providers.ali.templates.verify_code: must be a string")
               for p in found), found
    config = parse_config(text.replace("[SMS_1]", "'${TEMPLATE:-SMS_9}'").replace("123", "''"))
    assert config.providers[0].settings.templates == {"verify_code": "SMS_9"}  # substituted


def test_a_bad_default_breaker_is_reported_once_where_it_is_written() -> None:
    text = MINIMAL + "defaults:\n  breaker: {open_for: 10m, max_open_for: 1m}\n"
    text = text.replace("  - {name: box, type: sandbox}\n",
                        "  - {name: box, type: sandbox}\n  - {name: two, type: sandbox}\n")
    found = problems(text)
    assert [p.split(": ")[1] for p in found] == ["defaults.breaker.max_open_for"], found


def test_duplicate_provider_names_and_unknown_types() -> None:
    found = problems("""\
templates:
  t: {}
providers:
  - {name: a, type: sandbox}
  - {name: a, type: sandbox}
  - {name: b, type: pigeon}
""")
    assert any("conf.yaml:5: providers[1].name: duplicate provider name 'a'" in p for p in found)
    assert any("conf.yaml:6: providers.b.type: unknown provider type 'pigeon'" in p
               and "aliyun, http, huawei, sandbox, tencent, twilio" in p for p in found)


def test_a_template_no_provider_can_map_is_an_error() -> None:
    found = problems("""\
templates:
  verify_code: {params: [code]}
providers:
  - name: ali
    type: aliyun
    credentials: {access_key_id: a, access_key_secret: b}
    sign_name: s
    templates: {other: SMS_1}
""")
    assert any("conf.yaml:8: providers.ali.templates.other: no template 'other'" in p
               for p in found)
    assert any("conf.yaml:2: templates.verify_code: no provider can send it" in p for p in found)


def test_yaml_syntax_errors_have_a_line() -> None:
    found = problems("templates:\n  t: {}\nproviders: [\n")
    assert found and found[0].startswith("conf.yaml:")
    assert "invalid YAML" in found[0]


def test_a_user_provider_class_by_dotted_path() -> None:
    config = parse_config("""\
templates:
  t: {}
providers:
  - {name: mine, type: "providers.sandbox:SandboxProvider"}
""")
    assert config.providers[0].cls.__name__ == "SandboxProvider"
    found = problems("templates:\n  t: {}\nproviders:\n  - {name: x, type: 'json:loads'}\n")
    assert any("not a subclass of providers.base.Provider" in p for p in found)


def test_provider_overrides_inherit_defaults() -> None:
    config = parse_config("""\
defaults:
  timeout: 2s
  breaker: {open_for: 10s, consecutive_failures: 3}
templates:
  t: {}
providers:
  - {name: a, type: sandbox, timeout: 250ms, breaker: {consecutive_failures: 7}}
  - {name: b, type: sandbox, priority: 2, weight: 3, enabled: false}
""")
    a, b = config.providers
    assert a.timeout == 0.25 and a.breaker.consecutive_failures == 7 and a.breaker.open_for == 10
    assert b.timeout == 2 and b.breaker.consecutive_failures == 3
    assert (b.priority, b.weight, b.enabled) == (2, 3.0, False)


@pytest.mark.parametrize(("text", "seconds"), [("250ms", 0.25), ("5s", 5), ("2m", 120), (3, 3)])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_check_flag_exits_0_or_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL)
    assert main(["--config", str(good), "--check"]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL + "server: {bogus: 1}\n")
    assert main(["--config", str(bad), "--check"]) == 2
    assert "bad.yaml:5: server.bogus" in capsys.readouterr().err
    for name in CREDS:
        monkeypatch.delenv(name, raising=False)
    assert main(["--config", str(REPO / "config.yaml"), "--check"]) == 2
    assert main(["--config", str(REPO / "config.yaml"), "--check", "--emulate"]) == 0
    assert main(["--config", str(tmp_path / "missing.yaml"), "--check"]) == 2
    assert main(["--config", str(good), "--check", "--log-level", "debug"]) == 0
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(good), "--check", "--log-level", "LOUD"])
    assert exit_.value.code == 2  # argparse's usage error, never a traceback
    assert "invalid choice: 'LOUD'" in capsys.readouterr().err


def test_env_file_is_loaded_before_the_config(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CREDS:
        monkeypatch.delenv(name, raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("# credentials\n" + "".join(f"{k}={v}\n" for k, v in CREDS.items())
                        + "export EXTRA='quoted value'\n")
    for name in (*CREDS, "EXTRA"):
        monkeypatch.setenv(name, "placeholder")  # registers the var for monkeypatch to restore
        monkeypatch.delenv(name)
    assert main(["--config", str(REPO / "config.yaml"), "--env-file", str(env_file),
                 "--check"]) == 0
    import os

    assert os.environ["EXTRA"] == "quoted value"


async def test_emulate_accepts_real_credentials_exported_in_the_shell(
        make_gateway: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """--emulate fills only unset credentials; set ones must still work against the emulators."""
    monkeypatch.setenv("ALIYUN_ACCESS_KEY_ID", "LTAI-real-looking-id")
    monkeypatch.setenv("ALIYUN_ACCESS_KEY_SECRET", "real-looking-secret")
    gw = await make_gateway()
    member = gw.gateway.runtime.member("aliyun")
    assert member.provider.settings.credentials["access_key_id"].reveal() == "LTAI-real-looking-id"
    response = await gw.send()
    assert response.status == 200
    assert (await response.json())["provider"] == "aliyun"
