"""Secrets and privacy: credentials stay masked, and after a full session no response, page or
log line carries a configured secret or a full phone number. API keys compare in constant time.
"""

from __future__ import annotations

import copy
import hmac
import json
import logging
import pickle
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import gateway.logs
import gateway.service
from conftest import TEST_CONFIG, Harness, MakeGateway
from gateway.config import LoggingConfig, parse_config
from gateway.emulators import EMULATOR_CREDENTIALS, EMULATOR_OPTIONS
from gateway.logs import flush_logs, reset_logging, setup_file
from gateway.phones import mask, mask_text
from gateway.reload import reload_now
from providers.base import Secret

ENV = {  # every credential the config reads, with values nothing else would produce
    "ALIYUN_ACCESS_KEY_ID": "LTAI5tKeyIdXq81ZrT",
    "ALIYUN_ACCESS_KEY_SECRET": "aliyunSecretVb27Nw",
    "ALIYUN_SIGN_NAME": "Acme",
    "HUAWEI_APP_KEY": "hwAppKeyMm40Kd9",
    "HUAWEI_APP_SECRET": "hwAppSecretJu73Pq",
    "HUAWEI_SENDER": "csms10001000",
    "SMS_GATEWAY_API_KEY": "gwApiKeyTz58Lr",
    "SMS_GATEWAY_API_KEY_2": "gwApiKeyTwoHc16Ey",
}
SECRETS = [v for k, v in ENV.items() if not k.endswith(("SIGN_NAME", "SENDER"))]
CONFIG = TEST_CONFIG.replace(
    "api_keys: []", 'api_keys: ["${SMS_GATEWAY_API_KEY}", "${SMS_GATEWAY_API_KEY_2}"]')
AUTH = {"Authorization": f"Bearer {ENV['SMS_GATEWAY_API_KEY']}"}
NUMBERS = {  # E.164 -> the national digits a leak might also show
    "+8613800138000": "13800138000",
    "+8613900139000": "13900139000",
    "+16502530000": "6502530000",
    "+442079460958": "2079460958",
}


# -- the Secret type -------------------------------------------------------------------------

def test_secret_is_masked_everywhere_but_reveal() -> None:
    secret = Secret("hunter2-value")
    assert secret.reveal() == "hunter2-value"
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", "%s" % (secret,),  # noqa: UP031
                  repr([secret]), repr({"k": secret}), json.dumps(str(secret))):
        assert "hunter2" not in shown
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b") and Secret("a") != "a"
    assert bool(Secret("x")) and not Secret("")
    assert copy.deepcopy(secret).reveal() == "hunter2-value"
    pickled = pickle.loads(pickle.dumps(secret))  # noqa: S301 - our own bytes
    assert pickled == secret


def test_secret_is_masked_in_log_records(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("creds %s %r", Secret("hunter2-value"),
                                       {"k": Secret("hunter2-value")})
    assert "hunter2" not in caplog.text
    assert "Secret('***')" in caplog.text


def test_a_loaded_config_shows_no_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    config = parse_config(CONFIG)
    shown = repr(config) + str(config)
    for secret in SECRETS:
        assert secret not in shown
    assert config.server.api_keys[0].reveal() == ENV["SMS_GATEWAY_API_KEY"]


@pytest.mark.parametrize("number", ["+6834002", "1234567", "+16502530000", "+8613800138000",
                                    "+442079460958", "12345678901"])
def test_a_mask_hides_at_least_five_digits_however_short(number: str) -> None:
    masked = mask(number)
    assert len(masked) == len(number) and masked != number
    assert masked.count("*") >= 5
    assert mask_text(f"to {number}.") == f"to {masked}."  # the end of a sentence too
    assert mask_text("took 1234567.25 ms") == "took 1234567.25 ms"  # not a decimal


def test_numbers_in_a_logged_traceback_are_masked(tmp_path: Path) -> None:
    path = tmp_path / "gateway.log"
    reset_logging()
    setup_file(LoggingConfig(level="INFO", file=str(path)))
    try:
        try:
            raise RuntimeError("provider said: bad number +8613800138000")
        except RuntimeError:
            logging.getLogger("test").exception("send to %s failed", "+8613900139000")
        flush_logs()  # lines are written by the logging thread
        text = path.read_text()
    finally:
        reset_logging()
    assert "RuntimeError: provider said: bad number +86138******00" in text
    assert "+86139******00" in text
    assert "13800138000" not in text and "13900139000" not in text


# -- API keys --------------------------------------------------------------------------------

@pytest.mark.parametrize("given", ["first-key", "third-key", "wrong-key", ""])
async def test_every_api_key_is_compared_whatever_matches(
        make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    gw = await make_gateway(TEST_CONFIG.replace(
        "api_keys: []", "api_keys: [first-key, second-key, third-key]"))
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(gateway.service, "hmac", SimpleNamespace(compare_digest=counting))
    response = await gw.send(headers={"X-API-Key": given} if given else {})
    assert response.status == (200 if given.endswith("-key") and given != "wrong-key" else 401)
    assert [b for _, b in calls] == [b"first-key", b"second-key", b"third-key"]


# -- a full session, then a scan of everything it produced -----------------------------------

@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """The seed's rotating file handler, at DEBUG so the scan sees the most it could."""
    path = tmp_path / "logs" / "gateway.log"
    root = logging.getLogger()
    level = root.level
    access = logging.getLogger("aiohttp.access")
    access_level = access.level
    access.setLevel(logging.WARNING)  # as setup_console does: no request lines
    reset_logging()
    setup_file(LoggingConfig(level="DEBUG", file=str(path)))
    try:
        yield path
    finally:
        reset_logging()
        root.setLevel(level)
        access.setLevel(access_level)


class Recorder:
    """Keeps every response text of the session for the scan."""

    def __init__(self, gw: Harness) -> None:
        self.gw = gw
        self.texts: list[tuple[str, str]] = []

    async def send(self, template: str = "verify_code", to: Any = None,
                   **headers: str) -> dict[str, Any]:
        params = {"code": "123456"} if template == "verify_code" else {"name": "A", "time": "B"}
        body = {"to": to or list(NUMBERS), "template": template, "params": params}
        response = await self.gw.client.post("/sms", json=body, headers={**AUTH, **headers})
        answer: dict[str, Any] = await response.json()
        shown = dict(answer)
        if response.status in (200, 202):
            # SPEC: a send's answer lists the caller's own numbers back in "to" (E.164); every
            # other member, and every other response, must not carry them.
            assert shown.pop("to") == list(NUMBERS)
        self.texts.append((f"POST /sms {response.status}", json.dumps(shown, ensure_ascii=False)
                           + str(dict(response.headers))))
        return answer

    async def call(self, method: str, path: str, **kwargs: Any) -> int:
        response = await self.gw.client.request(method, path, **kwargs)
        self.texts.append((f"{method} {path} {response.status}",
                           await response.text() + str(dict(response.headers))))
        return response.status


async def session(rec: Recorder) -> None:
    """Sends in several modes, failures, auth errors, reloads (one bad), admin calls."""
    gw = rec.gw
    assert "id" in await rec.send()
    await rec.send("notice", **{"Idempotency-Key": "k1"})
    await rec.send("notice", **{"Idempotency-Key": "k1"})  # replay
    for mode in ("fail", "throttle", "html", "garbage", "huge", "reset", "reject", "limit",
                 "disabled", "hang", "unknown_code"):
        await gw.mode("aliyun", mode)
        await rec.send()
        await rec.send("notice")
        await rec.call("POST", "/admin/providers/aliyun/reset", json={}, headers=AUTH)
    await gw.mode("aliyun", "ok")
    await gw.mode("huawei", "down")
    await rec.call("POST", "/admin/providers/aliyun/open", json={}, headers=AUTH)
    await rec.send()  # 502
    await rec.call("POST", "/admin/providers/huawei/open", json={}, headers=AUTH)
    await rec.send()  # 503
    await rec.call("POST", "/admin/providers/aliyun/close", json={}, headers=AUTH)
    await rec.call("POST", "/admin/providers/huawei/reset", json={}, headers=AUTH)
    await gw.mode("huawei", "ok")
    await rec.call("POST", "/sms", json={"to": list(NUMBERS), "template": "verify_code"})  # 401
    await rec.call("POST", "/sms", json={}, headers={"Authorization": "Bearer nope"})
    await rec.call("POST", "/sms", json={"to": ["+86138001380001"], "template": "x"},
                   headers=AUTH)
    await rec.call("POST", "/admin/providers/aliyun/open", headers={"X-API-Key": "nope"})
    gw.config_path.write_text(CONFIG + "bogus: true\n")
    assert not await reload_now(gw.gateway)
    # An operator slip: a secret's variable in a field that is not a credential.
    gw.config_path.write_text(CONFIG.replace(
        "max_recipients: 5", 'max_recipients: "${ALIYUN_ACCESS_KEY_SECRET}"').replace(
        "shutdown_timeout: 2s", 'shutdown_timeout: "${HUAWEI_APP_SECRET}"'))
    assert not await reload_now(gw.gateway)
    gw.config_path.unlink()
    assert not await reload_now(gw.gateway)
    gw.config_path.write_text(CONFIG.replace("priority: 1", "priority: 3"))
    assert await reload_now(gw.gateway)
    await rec.send()


async def test_no_secret_or_full_number_anywhere_after_a_session(
        make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch, log_file: Path) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    gw = await make_gateway(CONFIG)
    rec = Recorder(gw)
    await session(rec)
    ids = [json.loads(text.split("{'", 1)[0])["id"] for label, text in rec.texts
           if label.startswith("POST /sms") and '"id"' in text]
    for path in ("/", "/?partial=1", "/status", "/status?recent=1", "/metrics",
                 "/openapi.json", "/healthz", "/readyz", "/_emulator", "/_emulator/aliyun",
                 *(f"/sms/{i}" for i in ids)):
        await rec.call("GET", path, headers=AUTH)
    flush_logs()  # lines are written by the logging thread
    logged = log_file.read_text(encoding="utf-8")
    assert "config reload rejected" in logged and "provider aliyun" in logged  # it was on

    sources = [*rec.texts, ("log file", logged)]
    for label, text in sources:
        for secret in SECRETS:
            assert secret not in text, f"{label} carries a credential"
        for e164, national in NUMBERS.items():
            for form in (e164, e164[1:], national):
                assert form not in text, f"{label} carries a full number {form}"
    assert len(rec.texts) > 60


class SlowDisk(logging.Handler):
    """An output that takes half a second a line, as a stalled disk or a blocked pipe does."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(0.5)
        self.lines.append(record.getMessage())


def test_a_slow_log_output_never_stalls_the_caller() -> None:
    slow = SlowDisk()
    reset_logging()
    gateway.logs._writer().route([slow])
    try:
        started = time.monotonic()
        for n in range(4):
            logging.getLogger("test").warning("line %d for +8613800138000", n)
        logged_in = time.monotonic() - started
        flush_logs()
    finally:
        reset_logging()
    assert logged_in < 0.5  # written inline, four lines would take 2 s
    assert slow.lines == [f"line {n} for +8613800138000" for n in range(4)]


def test_a_log_backlog_is_bounded_and_nothing_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stalled output: the caller may run BACKLOG lines ahead of it, then waits; no line is lost.

    Gated by events, not timed: the output holds its first line until the test lets it go.
    """
    monkeypatch.setattr(gateway.logs, "BACKLOG", 2)
    writer = gateway.logs._Writer()
    writing, gate = threading.Event(), threading.Event()
    written: list[str] = []
    logged: list[int] = []

    class Stalled(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            writing.set()
            gate.wait(30)
            written.append(record.getMessage())

    def caller() -> None:
        for n in range(6):
            logging.getLogger("test").warning("line %d", n)
            logged.append(n)

    reset_logging()
    writer.route([Stalled()])
    thread = threading.Thread(target=caller, daemon=True)
    try:
        thread.start()
        assert writing.wait(30)  # the output holds line 0
        for _ in range(3000):  # until the caller has queued the backlog (or run past it)
            if len(logged) >= 3:
                break
            time.sleep(0.01)
        time.sleep(0.1)  # room to run further, were the backlog not bounded
        assert logged == [0, 1, 2]  # 0 being written, 1 and 2 waiting: line 3 waits for room
        assert thread.is_alive()
        gate.set()
        thread.join(30)
        writer.flush()
    finally:
        gate.set()
        writer.reset()
    assert logged == list(range(6))
    assert written == [f"line {n}" for n in range(6)]  # every line written, in order


def test_the_emulators_credentials_are_read_only() -> None:
    """Shared by every emulator in the process: nobody may change them for everyone else."""
    with pytest.raises(TypeError):
        EMULATOR_CREDENTIALS["aliyun"]["access_key_secret"] = "changed"  # type: ignore[index]
    with pytest.raises(TypeError):
        EMULATOR_CREDENTIALS["tencent"] = {}  # type: ignore[index]
    with pytest.raises(TypeError):
        EMULATOR_OPTIONS["huawei"]["sender"] = "changed"  # type: ignore[index]
