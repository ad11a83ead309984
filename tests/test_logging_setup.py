"""Logging as operators meet it (issue 8, items 10 and 12; issue 9, item 4) and the seed's
deployment habits (item 15): the real process, a real reload, real files."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from gatewayproc import ROOT, SEND, free_port, ready, running, sandbox_config, until
from pytest_aiohttp import AiohttpClient
from watchfiles import Change

from gateway.app import create_app_by_config
from gateway.config import parse_config
from gateway.logrepeat import RepeatLimiter
from gateway.reload import config_files


def test_importing_the_gateway_sets_nothing_up() -> None:
    probe = ("import atexit, logging, threading; n = atexit._ncallbacks(); "
             "import gateway.cli, gateway.logs, gateway.wsgi; "
             "print(atexit._ncallbacks() - n, len(logging.getLogger().handlers), "
             "threading.active_count())")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,  # noqa: S603
                            cwd=ROOT, timeout=60, check=True)
    assert result.stdout.split() == ["0", "0", "1"]  # no atexit, no handler, no thread


async def test_a_reload_applies_a_changed_logging_section(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(sandbox_config(logging="  file: first.log\n  level: WARNING"))
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    async with running(config, console=tmp_path / "console.log") as gw:
        config.write_text(sandbox_config(logging="  file: second.log\n  level: INFO"))
        gw.signal(signal.SIGHUP)
        await until(lambda: second.exists() and "config reloaded" in second.read_text())
        async with aiohttp.ClientSession() as session, \
                session.post(f"{gw.url}/sms", json=SEND) as response:
            assert response.status == 200
        await until(lambda: "send " in second.read_text())
    assert "send " not in first.read_text()  # the old file got nothing after the reload


async def test_at_debug_the_watcher_ignores_the_log_file_beside_the_config(
        tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(sandbox_config(logging="  file: gateway.log"))
    log = tmp_path / "gateway.log"
    async with running(config, "--log-level", "DEBUG",
                       console=tmp_path / "console.log"):
        await until(lambda: "sms-gateway" in log.read_text())
        config.write_text(config.read_text() + "# touched\n")  # one real change: a reload
        await until(lambda: "generation 2" in log.read_text())
        text = log.read_text()
    assert "watchfiles" not in text  # no line about the folder's other files
    assert "generation 3" not in text  # and no reload but the one edit's


def test_identical_lines_are_held_back_and_summarised() -> None:
    now = [0.0]
    limiter = RepeatLimiter(burst=3, interval=10.0, clock=lambda: now[0])

    def record(message: str) -> logging.LogRecord:
        return logging.makeLogRecord({"name": "t", "levelno": 30, "msg": message})

    written = [r.getMessage() for _ in range(8) for r in limiter.admit(record("accept failed"))]
    assert written == ["accept failed"] * 3
    assert [r.getMessage() for r in limiter.admit(record("other"))] == ["other"]
    now[0] = 11.0
    after = [r.getMessage() for r in limiter.admit(record("accept failed"))]
    assert after[0].startswith("last message repeated 5 more times")
    assert after[1:] == ["accept failed"]
    assert limiter.drain() == []  # nothing held since


async def test_the_seeds_factory_name_builds_the_same_app(
        aiohttp_client: AiohttpClient) -> None:
    # in memory: parsed from text, a default store would land in the working directory
    config = parse_config(sandbox_config() + "storage: {url: memory}\n", env={})
    client = await aiohttp_client(create_app_by_config(config))
    response = await client.post("/sms", json=SEND)
    assert response.status == 200


async def test_gunicorn_serves_the_app_factory(tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    config = tmp_path / "config.yaml"
    config.write_text(sandbox_config(logging="  file: gateway.log"))
    port = free_port()
    with (tmp_path / "console.log").open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gunicorn", "gateway.wsgi:create", "-k",
            "aiohttp.GunicornWebWorker", "-b", f"127.0.0.1:{port}", "-w", "1",
            cwd=ROOT, stdout=out, stderr=out,
            env={**os.environ, "PYTHONPATH": str(ROOT), "SMS_GATEWAY_CONFIG": str(config)})
    try:
        await ready(f"http://127.0.0.1:{port}")
        async with aiohttp.ClientSession() as session, \
                session.post(f"http://127.0.0.1:{port}/sms", json=SEND) as response:
            assert response.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
    assert "sms-gateway worker" in (tmp_path / "gateway.log").read_text()


async def test_log_level_from_the_command_line_outlives_reloads(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(sandbox_config(logging="  file: first.log\n  level: INFO"))
    second = tmp_path / "second.log"
    async with running(config, "--log-level", "WARNING", console=tmp_path / "console.log") as gw:
        config.write_text(sandbox_config("  max_connections: 50",
                                         "  file: second.log\n  level: DEBUG"))
        gw.signal(signal.SIGHUP)
        await until(lambda: second.exists() and "applied at the next start" in second.read_text())
    text = second.read_text()
    assert "WARNING" in text and "INFO" not in text and "DEBUG" not in text


def test_the_watcher_filter_passes_the_config_and_its_overlays_only(tmp_path: Path) -> None:
    relevant = config_files(tmp_path / "config.yaml")
    for name, passes in [("config.yaml", True), ("config.prod.yaml", True),
                         ("gateway.log", False), ("config.yaml.swp", False),
                         ("other.yaml", False)]:
        assert relevant(Change.modified, str(tmp_path / name)) is passes, name
    assert not relevant(Change.modified, str(tmp_path / "logs" / "config.yaml"))
