"""``sms-gateway --workers N``: N real processes on one port and one store, supervised."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from pathlib import Path

import aiohttp
from gatewayproc import SEND, free_port, run_cli, running, sandbox_config, until
from replicas import (  # noqa: F401 - the fixtures
    replica_db_fixture,
    replica_server_fixture,
)

from gateway import __version__
from gateway.workers import child_argv, count, worker_file

STARTED = re.compile(r"worker (\d) started \(pid (\d+)\)")


def sqlite_config(tmp_path: Path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(sandbox_config(logging="  file: logs/gateway.log")
                      + "storage:\n  url: sqlite:///store.db\n")
    return config


def pids(console: Path) -> dict[int, int]:
    """worker index -> its latest pid, from the supervisor's lines."""
    found: dict[int, int] = {}
    for index, pid in STARTED.findall(console.read_text()):
        found[int(index)] = int(pid)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_two_workers_share_the_port_and_the_store_and_drain_on_sigterm(
        tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    async with running(sqlite_config(tmp_path), "--workers", "2", console=console) as gateway:
        await until(lambda: len(pids(console)) == 2)
        workers = pids(console)
        async with aiohttp.ClientSession() as session:

            async def both_alive() -> bool:
                async with session.get(gateway.url + "/status") as response:
                    cluster = (await response.json())["cluster"]
                return len(cluster["replicas"]) == 2

            for _ in range(200):
                if await both_alive():
                    break
                await asyncio.sleep(0.1)
            assert await both_alive()
            ids = []
            for _ in range(20):  # new connections: the kernel spreads them over both
                async with aiohttp.ClientSession() as fresh, fresh.post(
                        gateway.url + "/sms", json=SEND) as response:
                    assert response.status == 200
                    ids.append((await response.json())["id"])
            served_by = set()
            for message_id in ids:  # every record is readable from either worker
                async with session.get(f"{gateway.url}/sms/{message_id}") as response:
                    assert response.status == 200
            for _ in range(20):
                async with aiohttp.ClientSession() as fresh, fresh.get(
                        gateway.url + "/status") as response:
                    served_by.add((await response.json())["cluster"]["id"])
            assert len(served_by) == 2  # both workers answered
        gateway.signal(signal.SIGHUP)  # forwarded: each worker reloads its config
        logs = tmp_path / "logs"
        await until(lambda: all("config reloaded" in (logs / f"gateway.w{i}.log").read_text()
                                for i in (1, 2)))
        gateway.signal(signal.SIGTERM)
        assert await asyncio.wait_for(gateway.process.wait(), 30) == 0
    for pid in workers.values():
        assert not alive(pid)
    text = console.read_text()
    assert "stopping 2 workers" in text and "all workers stopped" in text
    assert not (tmp_path / "logs" / "gateway.log").exists()  # each worker has its own file


async def test_a_worker_killed_with_sigkill_is_restarted_and_logged(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    async with running(sqlite_config(tmp_path), "--workers", "2", console=console) as gateway:
        await until(lambda: len(pids(console)) == 2)
        banner = f"sms-gateway {__version__} on"
        await until(lambda: console.read_text().count(banner) == 2, within=90)  # both serving
        victim = pids(console)[1]
        os.kill(victim, signal.SIGKILL)
        await until(lambda: pids(console)[1] != victim)
        assert f"worker 1 (pid {victim}) died (killed by SIGKILL)" in console.read_text()
        try:  # this shared machine may take a while to start a Python process
            await until(lambda: console.read_text().count(banner) >= 3, within=90)
        except AssertionError:
            raise AssertionError(console.read_text()) from None
        for _ in range(6):
            async with aiohttp.ClientSession() as fresh, fresh.post(
                    gateway.url + "/sms", json=SEND) as response:
                assert response.status == 200


async def test_workers_on_postgresql(tmp_path: Path, replica_db: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(sandbox_config() + f"storage:\n  url: {replica_db}\n")
    console = tmp_path / "console.log"
    async with running(config, "--workers", "2", console=console) as gateway, \
            aiohttp.ClientSession() as session:
        first = None
        for _ in range(10):  # one Idempotency-Key, whichever worker answers: one message
            async with aiohttp.ClientSession() as fresh, fresh.post(
                    gateway.url + "/sms", json=SEND,
                    headers={"Idempotency-Key": "k-1"}) as response:
                assert response.status == 200
                body = await response.json()
                first = first or body["id"]
                assert body["id"] == first
        async with session.get(gateway.url + "/sms") as response:
            assert len((await response.json())["items"]) == 1


def test_workers_flag_takes_a_count_or_auto(tmp_path: Path) -> None:
    for bad in ("0", "many", "-1"):
        done = run_cli("--config", str(sqlite_config(tmp_path)), "--workers", bad,
                       "--port", str(free_port()))
        assert done.returncode == 2 and "--workers" in done.stderr


def test_an_unusable_sqlite_store_stops_the_supervisor_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(sandbox_config() + "storage:\n  url: sqlite:///missing/folder/x.db\n")
    done = run_cli("--config", str(config), "--workers", "2", "--port", str(free_port()))
    assert done.returncode == 2
    assert "does not exist" in done.stderr and "worker 1 started" not in done.stderr


def test_a_worker_gets_the_supervisor_s_flags_and_a_log_file_of_its_own() -> None:
    assert child_argv(["--config", "c.yaml", "--workers", "2", "--port", "9"]) == [
        "--config", "c.yaml", "--port", "9"]
    assert child_argv(["--workers=auto", "--emulate"]) == ["--emulate"]
    assert worker_file("logs/gateway.log", 2) == "logs/gateway.w2.log"
    assert worker_file("/var/log/sms", 1) == "/var/log/sms.w1.log"
    assert worker_file(None, 1) is None
    assert count("auto") >= 1 and count("3") == 3


def requests_total(exposition: str) -> float:
    """``sms_requests_total`` summed over its labels, from a /metrics page."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines()
               if line.startswith("sms_requests_total{"))


async def test_metrics_count_every_worker_whichever_answers(tmp_path: Path) -> None:
    # A scraper reaches one worker at a time: were counters per worker, each scrape would see
    # another worker's count and every rate computed from them would be nonsense.
    console = tmp_path / "console.log"
    async with running(sqlite_config(tmp_path), "--workers", "2", console=console) as gateway:
        await until(lambda: len(pids(console)) == 2)
        sends = 20
        for _ in range(sends):  # new connections: the kernel spreads them over both
            async with aiohttp.ClientSession() as fresh, fresh.post(
                    gateway.url + "/sms", json=SEND) as response:
                assert response.status == 200
        seen = set()
        for _ in range(20):
            async with aiohttp.ClientSession() as fresh, fresh.get(
                    gateway.url + "/metrics") as response:
                assert response.status == 200
                seen.add(requests_total(await response.text()))
        assert seen == {sends}
        workers = pids(console)
        os.kill(workers[1], signal.SIGKILL)  # a worker's counts outlive it
        await until(lambda: pids(console)[1] != workers[1])
        after = set()
        for _ in range(20):  # the survivor or the new worker: a refused connect is tried again
            with contextlib.suppress(aiohttp.ClientError):
                async with aiohttp.ClientSession() as fresh, fresh.get(
                        gateway.url + "/metrics") as response:
                    after.add(requests_total(await response.text()))
            await asyncio.sleep(0.05)
        assert after == {sends}
        gateway.signal(signal.SIGTERM)
        assert await asyncio.wait_for(gateway.process.wait(), 30) == 0
