"""The new providers through the whole gateway: config.yaml's examples, POST /sms, the dashboard."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Harness, MakeGateway
from gateway.config import ConfigError, parse_config

SHIPPED = (Path(__file__).resolve().parents[1] / "config.yaml").read_text()
QUIET = SHIPPED.replace("file: logs/gateway.log", "file: null")


async def test_make_run_lists_every_emulated_provider(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(QUIET)
    status = await (await gw.client.get("/status")).json()
    states = {p["name"]: p["state"] for p in status["providers"]}
    assert states == {"aliyun": "closed", "huawei": "closed", "tencent": "disabled",
                      "twilio": "disabled"}
    page = await (await gw.client.get("/", headers={"Accept": "text/html"})).text()
    for name in ("tencent", "twilio"):
        assert f"{name} emulator mode" in page  # its row, with its emulator's mode switch
    response = await gw.send()
    assert (await response.json())["provider"] == "aliyun"  # the examples are not routed


@pytest.mark.parametrize(("name", "number"), [("tencent", "+8613800138000"),
                                              ("twilio", "+14155552671")])
async def test_an_enabled_example_sends_through_its_emulator(
        make_gateway: MakeGateway, name: str, number: str) -> None:
    example = f"type: {name}\n    enabled: false\n    priority: 3\n"
    assert example in QUIET
    text = QUIET.replace(example, f"type: {name}\n    enabled: true\n    priority: 0\n")
    gw: Harness = await make_gateway(text)
    response = await gw.send(to=[number])
    body = await response.json()
    assert response.status == 200, body
    assert body["provider"] == name
    assert gw.accepted(name, body["id"]) == 1  # our id echoed: SessionContext / callback URL


def test_disabled_examples_need_no_secrets_but_enabled_ones_do() -> None:
    env = {"ALIYUN_ACCESS_KEY_ID": "a", "ALIYUN_ACCESS_KEY_SECRET": "b", "ALIYUN_SIGN_NAME": "c",
           "HUAWEI_APP_KEY": "d", "HUAWEI_APP_SECRET": "e", "HUAWEI_SENDER": "f"}
    assert len(parse_config(SHIPPED, env=env).providers) == 4
    with pytest.raises(ConfigError) as info:
        parse_config(SHIPPED.replace("enabled: false", "enabled: true"), env=env)
    text = str(info.value)
    for variable in ("TENCENT_SECRET_ID", "TENCENT_SDK_APP_ID", "TWILIO_AUTH_TOKEN",
                     "TWILIO_SENDER"):
        assert variable in text


def test_check_with_emulate_fills_every_emulated_type(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.cli import main

    for name in ("TENCENT_SECRET_ID", "TENCENT_SECRET_KEY", "TENCENT_SDK_APP_ID",
                 "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_SENDER"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "config.yaml"
    path.write_text(QUIET.replace("enabled: false", "enabled: true"))
    assert main(["--config", str(path), "--check", "--emulate"]) == 0
    assert main(["--config", str(path), "--check"]) == 2
