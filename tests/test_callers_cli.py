"""``sms-gateway send|status`` as subprocesses against a running gateway."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import sys
from pathlib import Path

from conftest import NUMBER, TEST_CONFIG, Harness, MakeGateway
from gateway.callers import render_status

REPO = Path(__file__).resolve().parents[1]


async def run(gw: Harness, *args: str, env: dict[str, str] | None = None,
              ) -> tuple[int, str, str]:
    """``python -m gateway ARGS --url <gateway>``; the gateway keeps serving meanwhile."""
    url = str(gw.client.make_url("")).rstrip("/")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SMS_GATEWAY_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, "--url", url, cwd=REPO,
        env={**environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_send_prints_the_outcome(gw: Harness) -> None:
    code, out, err = await run(gw, "send", "--to", NUMBER, "--template", "verify_code",
                               "--param", "code=1234")
    assert (code, err) == (0, "")
    assert out.startswith("sent via aliyun: id ")
    message = gw.emulators["aliyun"].state.messages[-1]
    assert message["params"] == {"code": "1234"}


async def test_send_refused_names_the_problem_and_exits_1(gw: Harness) -> None:
    code, out, err = await run(gw, "send", "--to", NUMBER, "--template", "verify_code")
    assert (code, out) == (1, "")
    assert "422" in err and "params.code: missing" in err


async def test_send_unknown_outcome_exits_3(gw: Harness) -> None:
    await gw.mode("aliyun", "fail")
    await gw.mode("huawei", "fail")
    code, out, _err = await run(gw, "send", "--to", NUMBER, "--template", "notice",
                                "--param", "name=A", "--param", "time=9")
    assert code == 3
    assert out.startswith("unknown: id ") and "may have been sent" in out


async def test_api_key_from_the_environment(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(TEST_CONFIG.replace("api_keys: []", "api_keys: [cli-key]"))
    args = ("send", "--to", NUMBER, "--template", "verify_code", "--param", "code=1")
    assert (await run(gw, *args))[0] == 1
    assert (await run(gw, *args, env={"SMS_GATEWAY_API_KEY": "cli-key"}))[0] == 0
    assert (await run(gw, *args, "--api-key", "cli-key"))[0] == 0


async def test_status_table_without_colour_when_piped(gw: Harness) -> None:
    await gw.client.post("/admin/providers/huawei/open", json={})
    code, out, _err = await run(gw, "status")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split()[:4] == ["PROVIDER", "TYPE", "PRI", "STATE"]
    assert lines[2].split()[:4] == ["aliyun", "aliyun", "1", "closed"]
    assert lines[3].split()[:4] == ["huawei", "huawei", "2", "open"]
    assert "\x1b[" not in out
    forced = await run(gw, "status", "--color", "always")
    assert "\x1b[31mopen" in forced[1] and "\x1b[32mclosed" in forced[1]


async def test_unreachable_gateway_exits_4() -> None:
    with socket.socket() as probe:  # a port nobody listens on once this closes
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "status", "--url", url, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 4
    assert f"cannot reach {url}".encode() in err


def test_render_status_pads_columns_and_colours_states() -> None:
    out = io.StringIO()
    render_status({"version": "1", "ready": False, "providers": [
        {"name": "a-long-name", "type": "twilio", "priority": 3, "state": "disabled",
         "counts": {"sent": 2}, "latency_ms": {"p95": 12.5}, "last_error": "20003"}]}, out, True)
    text = out.getvalue()
    assert "NOT READY" in text
    assert "\x1b[90mdisabled\x1b[0m" in text and "12.5" in text and "20003" in text


async def test_async_send_is_queued_then_status_shows_its_record(gw: Harness) -> None:
    code, out, err = await run(gw, "send", "--to", NUMBER, "--template", "notice", "--param",
                               "name=A", "--param", "time=9", "--async", "--ttl", "10m")
    assert (code, err) == (0, "")
    assert out.startswith("queued: id ") and "sms-gateway status " in out
    message_id = out.split()[2]
    for _ in range(200):
        if (await (await gw.client.get(f"/sms/{message_id}")).json())["status"] == "sent":
            break
        await asyncio.sleep(0.02)
    code, out, err = await run(gw, "status", message_id)
    assert (code, err) == (0, "")
    assert out.startswith(f"{message_id}: sent (notice, async)")
    assert "provider aliyun" in out and "deliveries: none reported yet" in out
    assert "expires at" not in out  # only while it waits
    assert NUMBER not in out


async def test_status_of_an_unknown_id_exits_1(gw: Harness) -> None:
    code, out, err = await run(gw, "status", "no-such-id")
    assert (code, out) == (1, "") and "404" in err


async def test_a_limit_refusal_names_the_rule_and_the_wait(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(
        TEST_CONFIG + "limits:\n  - {per: number, template: verify_code, max: 1, window: 1m}\n")
    args = ("send", "--to", NUMBER, "--template", "verify_code", "--param", "code=1")
    assert (await run(gw, *args))[0] == 0
    code, out, err = await run(gw, *args)
    assert (code, out) == (1, "")
    assert err.splitlines()[0] == ("sms-gateway: 429: limit number:verify_code:1/1m reached for "
                                   "+86138******00: at most 1 per 1m per number")
    assert len(err.splitlines()) == 2 and err.splitlines()[1].startswith("  retry after ")


async def test_a_callback_url_is_passed_on(gw: Harness) -> None:
    code, _out, err = await run(gw, "send", "--to", NUMBER, "--template", "verify_code",
                                "--param", "code=1", "--callback-url", "http://h.test/x")
    assert code == 1 and "callback_url" in err


async def test_the_cli_needs_only_the_base_install(gw: Harness, tmp_path: Path) -> None:
    """``make run`` installs no ``requests`` (the ``client`` extra): send and status still work."""
    blocker = tmp_path / "requests"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('requests is not installed')\n")
    env = {"PYTHONPATH": str(tmp_path)}
    code, out, err = await run(gw, "send", "--to", NUMBER, "--template", "verify_code",
                               "--param", "code=1", env=env)
    assert (code, err) == (0, "") and out.startswith("sent via aliyun")
    code, out, err = await run(gw, "status", env=env)
    assert (code, err) == (0, "") and "aliyun" in out
